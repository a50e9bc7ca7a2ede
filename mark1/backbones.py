"""The frozen backbones: loading V-JEPA2 and Qwen3 with `from_pretrained`, and writing tiny random ones."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
    VJEPA2Config,
    VJEPA2Model,
)

from mark1.config import mark1_home
from mark1.errors import ConfigError

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
    seed: int = 0


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


def write_tiny_backbones(out_dir: Path, sizes: TinySizes | None = None) -> tuple[Path, Path]:
    """Write `out_dir/vjepa2-tiny` and `out_dir/qwen3-tiny` (with tokenizer) in HF format, seeded."""
    sizes = sizes or TinySizes()
    encoder_dir, llm_dir = out_dir / "vjepa2-tiny", out_dir / "qwen3-tiny"
    torch.manual_seed(sizes.seed)
    VJEPA2Model(tiny_encoder_config(sizes)).save_pretrained(encoder_dir)
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(sizes.seed + 1)
    Qwen3ForCausalLM(tiny_llm_config(sizes, vocab_size=len(tokenizer))).save_pretrained(llm_dir)
    tokenizer.save_pretrained(llm_dir)
    return encoder_dir, llm_dir


def ensure_available(name: str) -> None:
    """Write the tiny backbones when `name` is one of their default paths and they are missing."""
    tiny_dir = mark1_home() / "tiny"
    path = Path(name)
    if path.parent == tiny_dir and not (path / "config.json").is_file():
        log.info("writing tiny random-weight backbones to %s", tiny_dir)
        write_tiny_backbones(tiny_dir)


def _load(loader, name: str, what: str, **kwargs):
    ensure_available(name)
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists()
    if looks_local and not (Path(name) / "config.json").is_file() and what != "tokenizer":
        raise ConfigError(f"{what} directory {name!r} has no config.json; run `mark1 tiny-backbones --out DIR` "
                          "or point --{what} at a Hugging Face model directory")
    try:
        return loader(name, **kwargs)
    except OSError as err:
        raise ConfigError(f"cannot load {what} {name!r}: {str(err).splitlines()[0]} "
                          f"(offline? download it first or pass --{what} with a local directory)") from err


def load_encoder(name: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> VJEPA2Model:
    """The frozen V-JEPA2 video encoder, in eval mode with gradients off (SDPA attention)."""
    model = _load(VJEPA2Model.from_pretrained, name, "encoder", dtype=dtype, attn_implementation="sdpa")
    return model.to(device).eval().requires_grad_(False)


def load_llm(name: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The frozen causal LLM (Qwen3), in eval mode with gradients off; gradients still flow through it."""
    model = _load(AutoModelForCausalLM.from_pretrained, name, "llm", dtype=dtype, attn_implementation="sdpa")
    return model.to(device).eval().requires_grad_(False)


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    return _load(AutoTokenizer.from_pretrained, name, "tokenizer")


def fingerprint(model: torch.nn.Module, config: dict) -> str:
    """A short hash of a model's config and a strided sample of every weight: tells two encoders apart cheaply."""
    digest = hashlib.sha256()
    stable = {k: v for k, v in config.items() if k not in ("_name_or_path", "transformers_version", "dtype")}
    digest.update(json.dumps(stable, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().flatten()
        sample = flat[:: max(1, flat.numel() // 256)].float().cpu().numpy()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()[:16]
