"""Tiny random-weight backbones in Hugging Face format for the demo, the tests and CPU benchmarks.

Real `VJEPA2Config` / `Qwen3Config` architectures at toy size and a byte-level tokenizer with Qwen3's
special tokens, so the same `from_pretrained` path runs as for the real models. The sizes live here only.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
    VJEPA2Config,
    VJEPA2Model,
)

from mark1.config import mark1_home
from mark1.files import check_output_dir, fsync_tree
from mark1.prompt import LETTERS, VIDEO_TOKEN, answer_text, build_prompt
from mark1.training import step_optimizer

log = logging.getLogger(__name__)

# Special tokens of Qwen3's tokenizer that Mark-1's prompt uses; the tiny tokenizer carries the same ones.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|video_pad|>",
    "<think>",
    "</think>",
]
# Same shape as Qwen3's template: with enable_thinking=False the generation prompt holds an empty think block.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)


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


def tiny_llm_config(sizes: TinySizes, vocab_size: int) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=sizes.llm_dim,
        intermediate_size=2 * sizes.llm_dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=sizes.llm_dim // 4,
        max_position_embeddings=4096,
        initializer_range=sizes.llm_init_range,
        tie_word_embeddings=False,
        eos_token_id=2,  # <|im_end|>, as in Qwen3's generation config
        pad_token_id=0,
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


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (every UTF-8 byte a token, Qwen3's special tokens on top): lossless on any text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for byte, char in _bytes_to_unicode().items():
        vocab[char] = len(SPECIAL_TOKENS) + byte
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=TINY_CHAT_TEMPLATE,
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
    prompt = tokenizer(
        build_prompt(tokenizer, words(3, 9) + "?", choices, num_slots), add_special_tokens=False
    ).input_ids
    hint = tokenizer(LETTERS[answer], add_special_tokens=False).input_ids
    pad = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
    start = prompt.index(pad) + rng.randint(0, num_slots - len(hint))
    prompt[start : start + len(hint)] = hint
    target = tokenizer(answer_text(tokenizer, choices[answer]), add_special_tokens=False).input_ids
    return prompt + target, [-100] * len(prompt) + target


def warm_up_llm(
    model: Qwen3ForCausalLM,
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
    instruction-tuned LLM does (measured after it: 1.0). Deciding which answer the video supports stays the
    projector's job. Only the LLM is trained here; Mark-1 then keeps it frozen.
    """
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    pad = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        pairs = [_warmup_example(rng, tokenizer, num_slots) for _ in range(16)]
        longest = max(len(ids) for ids, _ in pairs)
        ids = torch.tensor([i + [0] * (longest - len(i)) for i, _ in pairs])
        labels = torch.tensor([lab + [-100] * (longest - len(lab)) for _, lab in pairs])
        embeds = model.get_input_embeddings()(ids)
        # The other placeholders become random vectors: soft tokens will be arbitrary vectors, not pad tokens.
        slots = (ids == pad).unsqueeze(-1)
        noise = torch.randn(embeds.shape, generator=generator) * model.config.initializer_range
        loss = model(inputs_embeds=torch.where(slots, noise, embeds), labels=labels).loss
        loss.backward()
        step_optimizer(optimizer, list(model.parameters()), max_grad_norm=1.0)
    model.eval()
    log.info("tiny LLM warm-up: final answer loss %.3f", loss.item())


def write_tiny_backbones(out_dir: Path, sizes: TinySizes | None = None) -> tuple[Path, Path]:
    """Write `out_dir/vjepa2-tiny` and `out_dir/qwen3-tiny` (with tokenizer) in HF format, seeded.

    Each is written in a temporary folder and renamed into place, so a killed run never leaves a model
    folder that looks whole, and two first uses at once both end with the same bytes.
    """
    check_output_dir(out_dir, "--out")
    sizes = sizes or TinySizes()
    encoder_dir, llm_dir = out_dir / "vjepa2-tiny", out_dir / "qwen3-tiny"
    work = out_dir / f".writing-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    torch.manual_seed(sizes.seed)
    VJEPA2Model(tiny_encoder_config(sizes)).save_pretrained(work / encoder_dir.name)
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(sizes.seed + 1)
    llm = Qwen3ForCausalLM(tiny_llm_config(sizes, vocab_size=len(tokenizer)))
    if sizes.warmup_steps:
        warm_up_llm(llm, tokenizer, sizes.warmup_steps, seed=sizes.seed)
    llm.save_pretrained(work / llm_dir.name)
    tokenizer.save_pretrained(work / llm_dir.name)
    for done in (encoder_dir, llm_dir):
        fsync_tree(work / done.name)
        shutil.rmtree(done, ignore_errors=True)  # an older or partial copy: replaced whole
        os.replace(work / done.name, done)
    shutil.rmtree(work, ignore_errors=True)
    return encoder_dir, llm_dir


def ensure_available(name: str) -> None:
    """Write the tiny backbones when `name` is one of their default paths and they are missing."""
    tiny_dir = mark1_home() / "tiny"
    path = Path(name)
    if path.parent == tiny_dir and not (path / "config.json").is_file():
        log.info("writing tiny random-weight backbones to %s (once; about 15 s)", tiny_dir)
        write_tiny_backbones(tiny_dir)
