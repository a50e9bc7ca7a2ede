"""Loading the frozen backbones with `from_pretrained`: checked before and after, never running their code."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    VJEPA2Model,
)

from mark1.errors import ConfigError
from mark1.prompt import prepare_tokenizer
from mark1.tiny import ensure_available

ENCODER_TYPES = ("vjepa2",)  # the encoder's features and preprocessing are V-JEPA2's


def _model_config(name: str, what: str) -> Any:
    """The model's config, read before any weights: a directory without one, or a model that asks to run
    its own code (`auto_map`), is refused here with one line."""
    ensure_available(name)
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists()
    if looks_local and not (Path(name) / "config.json").is_file():
        raise ConfigError(
            f"{what} directory {name!r} has no config.json; run `mark1 tiny-backbones --out DIR` "
            f"or point --{what} at a Hugging Face model directory"
        )
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=False)
    except Exception as err:  # a damaged or hostile config.json raises many kinds; all mean "not loadable"
        raise ConfigError(
            f"cannot load {what} {name!r}: {str(err).splitlines()[0]} "
            f"(offline? download it first or pass --{what} with a local directory)"
        ) from err
    if getattr(config, "auto_map", None):
        raise ConfigError(
            f"{what} {name!r} asks to run its own code (auto_map); Mark-1 never runs model code"
        )
    return config


def _from_pretrained(
    loader: Any, name: str, what: str, allow_pickle: bool, attn: str = "sdpa", **kwargs: Any
) -> PreTrainedModel:
    """`loader.from_pretrained` that reads safetensors only (unless `allow_pickle`) and refuses weights
    files which leave parameters at their random init."""
    try:
        model, info = loader.from_pretrained(
            name,
            trust_remote_code=False,
            use_safetensors=None if allow_pickle else True,
            output_loading_info=True,
            attn_implementation=attn,
            **kwargs,
        )
    # A damaged weights file, a model of another kind, sizes that cannot build a model (0 heads, ...).
    except (SafetensorError, ValueError, TypeError, KeyError, ArithmeticError) as err:
        raise ConfigError(f"cannot load {what} {name!r}: {str(err).splitlines()[0][:300]}") from err
    except OSError as err:
        pickled = any(Path(name).glob("*.bin")) if Path(name).is_dir() else False
        hint = (
            "; its weights are pickle (.bin) files, which run code when loaded: convert them to safetensors, "
            "or set allow_pickle_weights: true if you trust them"
            if pickled and not allow_pickle
            else ""
        )
        raise ConfigError(
            f"cannot load {what} {name!r}: {str(err).splitlines()[0].rstrip('.')}{hint}"
        ) from err
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise ConfigError(
            f"{what} {name!r} lacks weights for {len(missing)} parameter(s) ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); is it the right model directory?"
        )
    return model


def load_encoder(
    name: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    allow_pickle: bool = False,
) -> VJEPA2Model:
    """The frozen V-JEPA2 video encoder, in eval mode with gradients off (SDPA attention)."""
    config = _model_config(name, "encoder")
    if config.model_type not in ENCODER_TYPES:
        raise ConfigError(
            f"encoder {name!r} is a {config.model_type!r} model; Mark-1's encoder is V-JEPA2 "
            "(e.g. facebook/vjepa2-vitg-fpc64-256)"
        )
    model = _from_pretrained(VJEPA2Model, name, "encoder", allow_pickle, dtype=dtype)
    return model.to(device).eval().requires_grad_(False)


def load_llm(
    name: str,
    devices: Sequence[torch.device] = (torch.device("cpu"),),
    quantization: str = "none",
    allow_pickle: bool = False,
    max_memory_gb: float = 0.0,
) -> PreTrainedModel:
    """The frozen causal LLM, in eval mode with gradients off; gradients still flow through it.

    Weights in fp16 on CUDA (a T4 has no bf16) and fp32 on the CPU, or int8/nf4 through bitsandbytes with
    that compute dtype (lm_head and the embeddings stay unquantized). Several `devices` spread the layers
    over them, first layers on the first.
    """
    config = _model_config(name, "llm")
    attention = causal_lm_attention(config, f"llm {name!r}")
    dtype = torch.float16 if devices[0].type == "cuda" else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantization != "none":
        _require("bitsandbytes", f"llm.quantization={quantization}")
        kwargs["quantization_config"] = _quantization_config(quantization, dtype)
    if quantization != "none" or len(devices) > 1:  # both place the weights while loading (accelerate)
        _require("accelerate", "llm.quantization or an LLM spread over GPUs")
        kwargs["device_map"] = "auto" if len(devices) > 1 else {"": devices[0]}
        if len(devices) > 1:
            gib = f"{max_memory_gb}GiB" if max_memory_gb else None
            kwargs["max_memory"] = {
                d.index: gib or torch.cuda.get_device_properties(d).total_memory for d in devices
            }
    model = _from_pretrained(AutoModelForCausalLM, name, "llm", allow_pickle, attn=attention, **kwargs)
    if "device_map" not in kwargs:
        model = model.to(devices[0])
    return model.eval().requires_grad_(False)


def causal_lm_attention(config: Any, what: str) -> str:
    """The attention a causal LM of `config` runs: SDPA where its class has it (no flash-attn on a T4), eager
    for the few that do not (Gemma 2). Anything but a causal LM is refused, naming `what`."""
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if model_class is None:
        raise ConfigError(f"{what} is a {config.model_type!r} model, not a causal language model")
    return "sdpa" if model_class._supports_sdpa else "eager"


def _quantization_config(quantization: str, compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,  # the block scales quantized too: 0.4 bit a weight less
        bnb_4bit_compute_dtype=compute_dtype,
    )


def _require(package: str, feature: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ConfigError(f'{feature} needs {package}: pip install -e ".[quant]" (or pip install {package})')


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The LLM's own tokenizer, from the same hub id or directory (so the same checks and --llm apply), with
    the video placeholder token (see `prepare_tokenizer`)."""
    _model_config(name, "llm")
    try:
        return prepare_tokenizer(AutoTokenizer.from_pretrained(name, trust_remote_code=False))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the tokenizer of llm {name!r}: {str(err).splitlines()[0]}") from err


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
