"""Tiny random-weight backbones in Hugging Face format for the demo, the tests and CPU benchmarks.

Real `VJEPA2Config` and causal-LM architectures (Qwen3, Qwen2, Llama, Mistral, Gemma 2 and 3) at toy size and
byte-level tokenizers with each family's special tokens and chat template (or none), so the same
`from_pretrained` path runs as for the real models. The sizes live here only.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
    VJEPA2Config,
    VJEPA2Model,
)

from mark1.config import mark1_home
from mark1.errors import ConfigError
from mark1.files import check_output_dir, fsync_tree
from mark1.prompt import LETTERS, VIDEO_TOKEN, answer_ids, encode_text, prepare_tokenizer, prompt_ids
from mark1.training import step_optimizer

log = logging.getLogger(__name__)
# Bumped whenever the tiny models' bytes change (sizes, seeds, warm-up), so that the copies written under
# $MARK1_HOME by an older Mark-1 are written again on first use. 2: the warm-up's open questions.
TINY_VERSION, VERSION_FILE = "2", "mark1-tiny-version"

# Same shape as Qwen3's template: with enable_thinking=False the generation prompt holds an empty think block.
QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)
LLAMA3_TEMPLATE = (  # Llama 3.x's turn markup, without its system-prompt preamble
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = "{{ bos_token }}{% for message in messages %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endfor %}"
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<start_of_turn>' + message['role'] + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TokenizerStyle:
    """The special tokens and chat template of a model family's tokenizer, on Mark-1's byte-level vocabulary."""

    special: tuple[str, ...]
    eos: str
    bos: str | None = None
    pad: str | None = None
    chat_template: str | None = None


TOKENIZER_STYLES = {
    # Qwen3's: a chat template and the <|video_pad|> placeholder.
    "qwen": TokenizerStyle(
        (
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|video_pad|>",
            "<think>",
            "</think>",
        ),
        eos="<|im_end|>",
        pad="<|endoftext|>",
        chat_template=QWEN_TEMPLATE,
    ),
    # Llama 3.x: a chat template, no placeholder.
    "llama3": TokenizerStyle(
        ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        eos="<|eot_id|>",
        bos="<|begin_of_text|>",
        chat_template=LLAMA3_TEMPLATE,
    ),
    # Llama 2 / Vicuna: neither a chat template nor a placeholder.
    "plain": TokenizerStyle(("<unk>", "<s>", "</s>"), eos="</s>", bos="<s>"),
    "mistral": TokenizerStyle(
        ("<unk>", "<s>", "</s>", "[INST]", "[/INST]"), eos="</s>", bos="<s>", chat_template=MISTRAL_TEMPLATE
    ),
    "gemma": TokenizerStyle(
        ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"),
        eos="<end_of_turn>",
        bos="<bos>",
        pad="<pad>",
        chat_template=GEMMA_TEMPLATE,
    ),
}
# Tiny LLM families: the transformers architecture and the tokenizer style each is written with.
TINY_LLMS: dict[str, tuple[type[PretrainedConfig], str]] = {
    "qwen3": (Qwen3Config, "qwen"),
    "qwen2": (Qwen2Config, "qwen"),
    "llama": (LlamaConfig, "plain"),
    "llama3": (LlamaConfig, "llama3"),
    "mistral": (MistralConfig, "mistral"),
    "gemma2": (Gemma2Config, "gemma"),  # eager attention and a logit soft cap: the odd one out
    "gemma3": (Gemma3TextConfig, "gemma"),  # embeddings scaled inside the embedding layer
}


@dataclass
class TinySizes:
    """Sizes of the tiny random backbones used by the demo, the tests and CPU benchmarks."""

    crop_size: int = 64  # 4 x 4 patches of 16 px
    video_dim: int = 64
    llm_dim: int = 64
    # 0.2, not the usual 0.02: a random LLM at 0.02 passes almost no gradient back to the soft tokens,
    # so nothing learns (measured: accuracy at chance); at 0.2 it does.
    llm_init_range: float = 0.2
    warmup_steps: int = 200  # generated-question pre-training of the tiny LLM (see warm_up_llm)
    seed: int = 0
    num_frames: int = 16  # configs/tiny.yaml's video.num_frames

    @property
    def grid(self) -> list[int]:
        """[T', H', W', D] of the tiny encoder's features (tubelet 2, patch 16)."""
        side = self.crop_size // 16
        return [self.num_frames // 2, side, side, self.video_dim]


def tiny_encoder_config(sizes: TinySizes) -> VJEPA2Config:
    return VJEPA2Config(
        crop_size=sizes.crop_size,
        frames_per_clip=16,
        hidden_size=sizes.video_dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        mlp_ratio=2.0,
        pred_hidden_size=32,
        pred_num_hidden_layers=1,
        pred_num_attention_heads=2,
        pred_num_mask_tokens=2,
    )


def tiny_llm_config(
    sizes: TinySizes, tokenizer: PreTrainedTokenizerBase, family: str = "qwen3"
) -> PretrainedConfig:
    config_class, _ = TINY_LLMS[family]
    return config_class(
        vocab_size=len(tokenizer),
        hidden_size=sizes.llm_dim,
        intermediate_size=2 * sizes.llm_dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=sizes.llm_dim // 4,
        max_position_embeddings=4096,
        initializer_range=sizes.llm_init_range,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table, the alphabet of byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def build_tiny_tokenizer(style: str = "qwen") -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (every UTF-8 byte a token, the style's special tokens first): lossless on any
    text, with the special tokens and chat template (or none) of a model family."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    kind = TOKENIZER_STYLES[style]
    vocab = {tok: i for i, tok in enumerate(kind.special)}
    for byte, char in _bytes_to_unicode().items():
        vocab[char] = len(kind.special) + byte
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(kind.special))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=kind.bos,
        eos_token=kind.eos,
        pad_token=kind.pad,
        chat_template=kind.chat_template,
    )


# Words for the tiny LLM's warm-up questions: the vocabulary of driving-video questions.
_WORDS = (  # noqa: SIM905 (one readable string beats 64 quoted words)
    "xe biển báo đường làn rẽ trái phải đi thẳng tốc độ tối đa cấm dừng đỗ màu đỏ xanh vàng trắng "
    "bên cạnh phía trước sau có không được phép bao nhiêu km/h hướng nào Đúng Sai cầu hầm ngã tư "
    "vạch kẻ đèn tín hiệu ô tô xe máy người đi bộ TP. Hồ Chí Minh Biên Hòa 40 50 60 80"
).split()


def _warmup_example(
    rng: random.Random, tokenizer: PreTrainedTokenizerBase, num_slots: int
) -> tuple[list[int], list[int]]:
    """One generated question in Mark-1's prompt format whose video region holds the answer's letter."""
    words = lambda lo, hi: " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))  # noqa: E731
    texts = list(dict.fromkeys(words(1, 3) for _ in range(rng.choice((2, 2, 3, 4, 4, 5)))))
    if len(texts) < 2:
        texts.append(texts[0] + " không")
    choices = [f"{LETTERS[i]}. {t}" for i, t in enumerate(texts)]
    answer = rng.randrange(len(choices))
    prompt = prompt_ids(tokenizer, "auto", words(3, 9) + "?", choices, num_slots)
    return _hinted(rng, tokenizer, prompt, [LETTERS[answer]], num_slots, choices[answer])


# The open warm-up's descriptions: what is asked about, and the attributes the video region hints at.
_SUBJECTS = ("biển báo", "xe ô tô", "xe máy", "đèn tín hiệu", "vạch kẻ", "xe buýt", "người đi bộ", "cột mốc")
_COLOURS = ("đỏ", "xanh lá", "xanh dương", "vàng", "trắng", "đen", "cam")
_PLACES = ("bên trái", "bên phải", "phía trước", "phía sau", "giữa đường")
_ASK = ("Mô tả {} trong video.", "Hãy mô tả {}.", "{} trong video trông thế nào?")


def _open_warmup_example(
    rng: random.Random, tokenizer: PreTrainedTokenizerBase, num_slots: int
) -> tuple[list[int], list[int]]:
    """One open question ("Mô tả xe máy trong video.") answered by a description that names what was asked
    about and the colour and place the video region hints at ("Xe máy màu vàng, phía sau.")."""
    subject, colour, place = rng.choice(_SUBJECTS), rng.choice(_COLOURS), rng.choice(_PLACES)
    question = rng.choice(_ASK).format(subject)
    prompt = prompt_ids(tokenizer, "auto", question[0].upper() + question[1:], [], num_slots)
    answer = f"{subject[0].upper()}{subject[1:]} màu {colour}, {place}."
    return _hinted(rng, tokenizer, prompt, [colour, place], num_slots, answer)


def _hinted(
    rng: random.Random,
    tokenizer: PreTrainedTokenizerBase,
    prompt: list[int],
    hints: list[str],
    num_slots: int,
    answer: str,
) -> tuple[list[int], list[int]]:
    """The prompt with each hint's tokens written over the video placeholders at random places (apart),
    then the answer as the only labelled tokens."""
    first = prompt.index(tokenizer.convert_tokens_to_ids(VIDEO_TOKEN))
    encoded = [encode_text(tokenizer, hint) for hint in hints]
    free = num_slots - sum(len(h) for h in encoded)
    gaps = sorted(rng.randint(0, free) for _ in encoded)  # sorted offsets: the hints never overlap
    placed = 0  # slots taken by the hints before this one
    for gap, hint in zip(gaps, encoded, strict=True):
        start = first + gap + placed
        prompt[start : start + len(hint)] = hint
        placed += len(hint)
    target = answer_ids(tokenizer, answer)
    return prompt + target, [-100] * len(prompt) + target


def warm_up_llm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    steps: int = 600,
    num_slots: int = 32,
    seed: int = 0,
) -> None:
    """Teach a random tiny LLM what a real one brings: heed the video region and copy the chosen choice.

    A frozen random LLM passes almost no useful gradient to soft tokens: the answer did not learn through
    it (measured: validation accuracy 0.44-0.69 after 40 epochs). A short pre-training on generated
    questions whose video region holds the answer's letter somewhere among the placeholders (never a
    video) teaches it to read that region and to copy the chosen choice's letter and text, as an
    instruction-tuned LLM does (measured after it: 1.0). A quarter of the questions are open ones whose
    region hints at a colour and a place, answered by a description naming what the question asked about
    ("Mô tả xe máy trong video." → "Xe máy màu vàng, phía sau."): a real LLM knows how to word an answer, a
    random byte-level one does not (measured without it: open answers reached token F1 0.6 and exact match
    0). Deciding which answer the video supports, and which colour and place it shows, stays the projector's
    job. Only the LLM is trained here; Mark-1 then keeps it frozen.
    """
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    tokenizer = prepare_tokenizer(copy.deepcopy(tokenizer))  # the saved tokenizer keeps what it had
    pad = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        pairs = [_warmup_example(rng, tokenizer, num_slots) for _ in range(12)]
        pairs += [_open_warmup_example(rng, tokenizer, num_slots) for _ in range(4)]
        longest = max(len(ids) for ids, _ in pairs)
        ids = torch.tensor([i + [0] * (longest - len(i)) for i, _ in pairs])
        labels = torch.tensor([lab + [-100] * (longest - len(lab)) for _, lab in pairs])
        slots = (ids == pad).unsqueeze(-1)  # an added placeholder's id is past the table: never looked up
        embeds = model.get_input_embeddings()(ids.masked_fill(slots.squeeze(-1), 0))
        # The placeholders become random vectors: soft tokens will be arbitrary vectors, not pad tokens.
        noise = torch.randn(embeds.shape, generator=generator) * model.config.initializer_range
        loss = model(inputs_embeds=torch.where(slots, noise, embeds), labels=labels).loss
        loss.backward()
        step_optimizer(optimizer, list(model.parameters()), max_grad_norm=1.0)
    model.eval()
    log.info("tiny LLM warm-up: final answer loss %.3f", loss.item())


def write_tiny_llm(out_dir: Path, family: str = "qwen3", sizes: TinySizes | None = None) -> Path:
    """Write `out_dir/<family>-tiny`, a seeded tiny LLM of `family` (see TINY_LLMS) with its tokenizer."""
    return _write_tiny(out_dir, sizes or TinySizes(), (family,))[1][0]


def write_tiny_backbones(out_dir: Path, sizes: TinySizes | None = None) -> tuple[Path, Path]:
    """Write `out_dir/vjepa2-tiny` and `out_dir/qwen3-tiny` (with tokenizer) in HF format, seeded."""
    encoder_dir, (llm_dir,) = _write_tiny(out_dir, sizes or TinySizes(), ("qwen3",), encoder=True)
    return encoder_dir, llm_dir


def _write_tiny(
    out_dir: Path, sizes: TinySizes, families: tuple[str, ...], encoder: bool = False
) -> tuple[Path, list[Path]]:
    """Each model is written in a temporary folder and renamed into place, so a killed run never leaves a
    model folder that looks whole, and two first uses at once both end with the same bytes."""
    check_output_dir(out_dir, "--out")
    unknown = set(families) - set(TINY_LLMS)
    if unknown:
        raise ConfigError(
            f"no tiny LLM family {', '.join(sorted(unknown))}; choose from {', '.join(TINY_LLMS)}"
        )
    work = out_dir / f".writing-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    encoder_dir, done = out_dir / "vjepa2-tiny", []
    if encoder:
        torch.manual_seed(sizes.seed)
        VJEPA2Model(tiny_encoder_config(sizes)).save_pretrained(work / encoder_dir.name)
        done.append(encoder_dir)
    llm_dirs = []
    for family in families:
        tokenizer = build_tiny_tokenizer(TINY_LLMS[family][1])
        torch.manual_seed(sizes.seed + 1)
        llm = AutoModelForCausalLM.from_config(tiny_llm_config(sizes, tokenizer, family))
        if sizes.warmup_steps:
            warm_up_llm(llm, tokenizer, sizes.warmup_steps, seed=sizes.seed)
        llm_dir = out_dir / f"{family}-tiny"
        llm.save_pretrained(work / llm_dir.name)
        tokenizer.save_pretrained(work / llm_dir.name)
        llm_dirs.append(llm_dir)
    for path in [*done, *llm_dirs]:
        (work / path.name / VERSION_FILE).write_text(TINY_VERSION)
        fsync_tree(work / path.name)
        shutil.rmtree(path, ignore_errors=True)  # an older or partial copy: replaced whole
        os.replace(work / path.name, path)
    shutil.rmtree(work, ignore_errors=True)
    return encoder_dir, llm_dirs


def _is_current(model_dir: Path) -> bool:
    try:
        return (model_dir / "config.json").is_file() and (
            model_dir / VERSION_FILE
        ).read_text() == TINY_VERSION
    except (OSError, UnicodeDecodeError):
        return False


def ensure_available(name: str) -> None:
    """Write the tiny backbones when `name` is one of their default paths and they are missing, or were
    written by a Mark-1 whose tiny models differ (an older warm-up)."""
    tiny_dir = mark1_home() / "tiny"
    path = Path(name)
    if path.parent == tiny_dir and not _is_current(path):
        log.info("writing tiny random-weight backbones to %s (once; about 15 s)", tiny_dir)
        family = path.name.removesuffix("-tiny")
        if family in TINY_LLMS and family != "qwen3":
            write_tiny_llm(tiny_dir, family)
        else:
            write_tiny_backbones(tiny_dir)
