"""GPU memory planning before any download: which LLM, at which precision and batch, fits which GPUs.

Architectures are read from config files only (shipped ones under configs/models/, a local directory, or the
Hugging Face cache, never the network) and built on the meta device to count parameters: nothing is
allocated. Activations of a training step through the frozen LLM come from per-token formulas measured with
saved-tensor hooks (see docs/performance.md, "Memory plan"); the projector's are measured on the meta
device at the real size. Figures are bytes; the CLI prints decimal GB (1e9 bytes).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import CONFIG_MAPPING, AutoModelForCausalLM, PretrainedConfig

from mark1.backbones import causal_lm_attention
from mark1.config import CONFIG_DIR, QUANTIZATIONS, ProjectorConfig
from mark1.errors import ConfigError

MODELS_DIR = CONFIG_DIR / "models"
BATCHES = (1, 2, 4, 8, 16, 32, 64)
# Hub ids whose configs ship with Mark-1, so `mark1 plan Qwen/Qwen3-8B` works offline.
KNOWN_MODELS = {
    "qwen/qwen3-0.6b": "qwen3-0.6b",
    "qwen/qwen3-0.6b-base": "qwen3-0.6b",
    "qwen/qwen3-1.7b": "qwen3-1.7b",
    "qwen/qwen3-1.7b-base": "qwen3-1.7b",
    "qwen/qwen3-4b": "qwen3-4b",
    "qwen/qwen3-4b-base": "qwen3-4b",
    "qwen/qwen3-8b": "qwen3-8b",
    "qwen/qwen3-8b-base": "qwen3-8b",
    "qwen/qwen2.5-7b": "qwen2.5-7b",
    "qwen/qwen2.5-7b-instruct": "qwen2.5-7b",
    "meta-llama/llama-3.1-8b": "llama-3.1-8b",
    "meta-llama/llama-3.1-8b-instruct": "llama-3.1-8b",
    "meta-llama/meta-llama-3.1-8b": "llama-3.1-8b",
    "meta-llama/meta-llama-3.1-8b-instruct": "llama-3.1-8b",
    "mistralai/mistral-7b-v0.3": "mistral-7b-v0.3",
    "mistralai/mistral-7b-instruct-v0.3": "mistral-7b-v0.3",
    "google/gemma-2-9b": "gemma-2-9b",
    "google/gemma-2-9b-it": "gemma-2-9b",
    "google/gemma-3-4b-pt": "gemma-3-4b",
    "google/gemma-3-4b-it": "gemma-3-4b",
    "facebook/vjepa2-vitg-fpc64-256": "vjepa2-vitg-fpc64-256",
}

# Saved-tensor bytes per token per decoder layer of a training step (fp16/bf16 compute, SDPA), as
# a*H + b*q + c*kv + d*I (H hidden, q = heads*head_dim, kv = kv_heads*head_dim, I intermediate). Measured with
# torch.autograd.graph.saved_tensors_hooks on CPU bf16 models; tests/test_plan.py re-measures them.
ACTIVATION_COEFFICIENTS = {
    "llama": (8, 4, 4, 6),
    "mistral": (8, 4, 4, 6),
    "qwen2": (8, 4, 4, 6),
    "qwen3": (8, 8, 8, 6),  # + q and k norms
    "gemma3_text": (16, 8, 8, 6),  # + q/k norms and four norms around attention and MLP
    "gemma2": (16, 8, 8, 6),  # gemma3_text's figure: gemma2 measured 14% below it
}
UNKNOWN_COEFFICIENTS = (16, 8, 8, 6)  # the largest measured: an unmeasured family is not under-planned
# Eager attention (a class without SDPA) also saves each head's L x L scores: measured on gemma2, 8 bytes
# per entry (the soft-capped scores, the fp32 softmax and its half-precision copy).
EAGER_SCORE_BYTES = 8
ANSWER_TOKENS = 16  # answer positions projected to the vocabulary per example
ADAM_BYTES = 16  # fp32 weight, gradient and AdamW's two moments per projector parameter


@dataclass(frozen=True)
class LLMParams:
    """Parameter counts by how bitsandbytes stores them."""

    embeddings: int
    head: int  # the output head; 0 when tied to the embeddings
    linear_weights: int  # decoder nn.Linear weights: the only quantized part
    linear_rows: int  # their output rows (int8 keeps one fp32 scale per row)
    linear_biases: int
    other: int  # norms (kept in float)

    @property
    def total(self) -> int:
        return self.embeddings + self.head + self.linear_weights + self.linear_biases + self.other


@dataclass(frozen=True)
class LLMArch:
    """What sets an LLM's memory."""

    name: str  # as the user gave it
    source: str  # the config file read
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    sdpa: bool  # False: the class runs eager attention
    params: LLMParams

    @property
    def label(self) -> str:
        path = Path(self.name.rstrip("/"))
        return path.parent.name if path.name == "config.json" and path.parent.name else path.name


@dataclass(frozen=True)
class EncoderArch:
    name: str
    source: str
    params: int
    hidden_size: int
    intermediate_size: int
    crop_size: int
    patch_size: int
    tubelet_size: int


@dataclass
class GpuLoad:
    """One GPU's share at one batch size, by part (bytes)."""

    gpu: int
    parts: dict[str, int]
    total: int = field(init=False)  # a field, not a property, so that --json has it

    def __post_init__(self) -> None:
        self.total = sum(self.parts.values())


@dataclass
class BatchPlan:
    batch: int
    gpus: list[GpuLoad]
    fits: bool
    peak: int = field(init=False)  # the busiest GPU's total

    def __post_init__(self) -> None:
        self.peak = max(g.total for g in self.gpus)


@dataclass
class PrecisionPlan:
    """One LLM at one precision: its placement and what each batch size needs."""

    llm: str
    quantization: str
    placement: str  # "one GPU", "spread" or "does not fit"
    weights_bytes: int
    projector_state_bytes: int
    batches: list[BatchPlan]
    batch: int  # the largest batch that fits (0: none)
    verdict: str


@dataclass
class EncoderPlan:
    name: str
    params: int
    batch: int
    weights_bytes: int
    activations_bytes: int
    fits: bool
    total: int = field(init=False)

    def __post_init__(self) -> None:
        self.total = self.weights_bytes + self.activations_bytes


@dataclass
class Plan:
    gpus: int
    memory_gb: float
    prompt_tokens: int
    answer_tokens: int
    gradient_checkpointing: bool
    encoder: EncoderPlan
    precisions: list[PrecisionPlan]
    notes: list[str] = field(default_factory=list)


# ---- reading architectures -------------------------------------------------------------------------------


def resolve_config_file(name: str) -> Path:
    """A local directory or config.json, a shipped name (`qwen3-8b`), a known hub id (`Qwen/Qwen3-8B`), or a
    hub id whose config.json is already in the Hugging Face cache; never the network."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{name} has no config.json; point at a Hugging Face model directory")
        return path / "config.json"
    if path.is_file():
        return path
    for stem in (name.lower(), KNOWN_MODELS.get(name.lower())):
        if stem and (MODELS_DIR / f"{stem}.json").is_file():
            return MODELS_DIR / f"{stem}.json"
    cached = _hub_cache_file(name)
    if cached is not None:
        return cached
    shipped = ", ".join(sorted(p.stem for p in MODELS_DIR.glob("*.json")))
    raise ConfigError(
        f"no config for {name!r}: not a local directory or file, not shipped ({shipped}), and not in the "
        "Hugging Face cache; download its config.json (`huggingface-cli download NAME config.json`) or "
        "pass a model directory"
    )


def _hub_cache_file(name: str) -> Path | None:
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def read_config(name: str) -> tuple[PretrainedConfig, Path]:
    """The transformers config `name` resolves to, read from its file (refusing model code)."""
    file = resolve_config_file(name)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"cannot read {file} as a JSON model config ({err}); check or re-download it"
        ) from err
    if not isinstance(data, dict) or "model_type" not in data:
        raise ConfigError(f"{file} has no model_type; is it a Hugging Face config.json?")
    if data.get("auto_map"):
        raise ConfigError(f"{file} asks to run its own code (auto_map); Mark-1 never runs model code")
    if data["model_type"] not in CONFIG_MAPPING:
        raise ConfigError(
            f"{file}: model_type {data['model_type']!r} is unknown to this transformers; upgrade it or pick "
            "another model"
        )
    try:
        return CONFIG_MAPPING[data["model_type"]].from_dict(data), file
    except Exception as err:  # transformers' config checks raise several types for bad values
        raise ConfigError(f"{file} is not a valid {data['model_type']} config: {err}") from err


def read_llm(name: str) -> LLMArch:
    """An LLM's sizes and parameter groups, from its config built on the meta device."""
    config, file = read_config(name)
    config = config.get_text_config()  # a multimodal config (gemma3): its language model
    attention = causal_lm_attention(config, str(file))
    sizes = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    if not all(isinstance(getattr(config, k, None), int) and getattr(config, k) > 0 for k in sizes):
        raise ConfigError(f"{file}: {', '.join(sizes)} must all be positive integers")
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(
                config, attn_implementation=attention, dtype=torch.float16
            )
    except Exception as err:  # sizes that do not make a model
        raise ConfigError(f"{file}: cannot build a model from it ({str(err).splitlines()[0][:200]})") from err
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return LLMArch(
        name=name,
        source=str(file),
        model_type=config.model_type,
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        intermediate_size=config.intermediate_size,
        vocab_size=config.vocab_size,
        sdpa=attention == "sdpa",
        params=count_llm_params(model),
    )


def count_llm_params(model: nn.Module) -> LLMParams:
    """Parameters by group; bitsandbytes quantizes every nn.Linear but the output head."""
    embeddings = model.get_input_embeddings().weight
    head_module = model.get_output_embeddings()
    tied = head_module.weight is embeddings
    weights = rows = biases = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module is not head_module:
            weights += module.weight.numel()
            rows += module.out_features
            biases += module.bias.numel() if module.bias is not None else 0
    head = 0 if tied else head_module.weight.numel()
    total = sum(p.numel() for p in model.parameters())  # shared (tied) parameters once
    other = total - embeddings.numel() - head - weights - biases
    return LLMParams(embeddings.numel(), head, weights, rows, biases, other)


def read_encoder(name: str) -> EncoderArch:
    """The V-JEPA2 encoder's sizes and parameter count (built on the meta device)."""
    from transformers import VJEPA2Model

    config, file = read_config(name)
    if config.model_type != "vjepa2":
        raise ConfigError(f"{file}: the encoder must be a V-JEPA2 model, got {config.model_type!r}")
    with torch.device("meta"):
        model = VJEPA2Model(config)
    return EncoderArch(
        name=name,
        source=str(file),
        params=sum(p.numel() for p in model.parameters()),
        hidden_size=config.hidden_size,
        intermediate_size=int(config.hidden_size * config.mlp_ratio),
        crop_size=config.crop_size,
        patch_size=config.patch_size,
        tubelet_size=config.tubelet_size,
    )


# ---- the memory model ------------------------------------------------------------------------------------


def weight_bytes(params: LLMParams, quantization: str, float_bytes: int = 2) -> int:
    """Bytes of the LLM's weights. `float_bytes` is the unquantized parts' size: 2 (fp16) on CUDA."""
    unquantized = params.embeddings + params.head + params.linear_biases + params.other
    if quantization == "none":
        return (unquantized + params.linear_weights) * float_bytes
    if quantization == "int8":  # int8 weights + one fp32 scale per output row (LLM.int8's SCB)
        quantized = params.linear_weights + 4 * params.linear_rows
    elif quantization == "nf4":  # 4-bit weights + double quantization: an 8-bit absmax per 64-weight block,
        blocks = params.linear_weights / 64  # and an fp32 absmax per 256 of those
        quantized = params.linear_weights / 2 + blocks + 4 * blocks / 256
    else:
        raise ConfigError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    return round(quantized) + unquantized * float_bytes


def layer_token_bytes(arch: LLMArch) -> int:
    """Saved-tensor bytes per token per decoder layer in a training step (fp16 compute)."""
    a, b, c, d = ACTIVATION_COEFFICIENTS.get(arch.model_type, UNKNOWN_COEFFICIENTS)
    q, kv = arch.num_heads * arch.head_dim, arch.num_kv_heads * arch.head_dim
    return a * arch.hidden_size + b * q + c * kv + d * arch.intermediate_size


@dataclass(frozen=True)
class Step:
    """One training step's shape."""

    batch: int
    prompt_tokens: int  # the whole prompt: soft tokens, question, choices, answer
    answer_tokens: int = ANSWER_TOKENS
    gradient_checkpointing: bool = False


def layer_activation_bytes(arch: LLMArch, step: Step) -> tuple[int, int]:
    """(bytes each decoder layer keeps until backward, the extra peak of the one layer being recomputed)."""
    tokens = step.batch * step.prompt_tokens
    full = tokens * layer_token_bytes(arch)
    if not arch.sdpa:
        full += step.batch * arch.num_heads * step.prompt_tokens**2 * EAGER_SCORE_BYTES
    if step.gradient_checkpointing:  # only each layer's input (fp16) is kept; one layer is rebuilt at a time
        return tokens * arch.hidden_size * 2, full
    return full, 0


def prompt_bytes(arch: LLMArch, step: Step) -> int:
    """The prompt's embeddings and the spliced inputs_embeds (fp16) on the LLM's first GPU."""
    return 2 * step.batch * step.prompt_tokens * arch.hidden_size * 2


def logits_bytes(arch: LLMArch, step: Step) -> int:
    """The answer positions' fp32 logits, their log-softmax and its gradient, on the LLM's last GPU."""
    return 3 * step.batch * step.answer_tokens * arch.vocab_size * 4


# ---- the projector ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectorCost:
    params: int
    fixed_activation_bytes: int  # per step, whatever the batch
    clip_activation_bytes: int  # per clip

    @property
    def state_bytes(self) -> int:
        return self.params * ADAM_BYTES

    def activation_bytes(self, batch: int) -> int:
        return self.fixed_activation_bytes + batch * self.clip_activation_bytes


def projector_cost(
    cfg: ProjectorConfig, grid: tuple[int, int, int, int], llm_dim: int, question_tokens: int
) -> ProjectorCost:
    """The projector's parameters and its training activations (fp32), measured on the meta device at the
    real size: its autograd graph is recorded without computing anything, at batch 1 and 2."""
    from mark1.model.projector import Projector

    with torch.device("meta"):
        projector = Projector(cfg, grid[-1], llm_dim).train()
    one, two = (saved_bytes_meta(projector, b, grid, llm_dim, question_tokens) for b in (1, 2))
    return ProjectorCost(projector.num_parameters(), max(2 * one - two, 0), two - one)


def saved_bytes_meta(
    projector: nn.Module, batch: int, grid: tuple[int, int, int, int], llm_dim: int, question_tokens: int
) -> int:
    """Bytes of the tensors the projector's forward saves for backward (parameters excluded)."""
    video = torch.empty(batch, *grid, device="meta")
    question = torch.empty(batch, question_tokens, llm_dim, device="meta")
    mask = torch.ones(batch, question_tokens, dtype=torch.bool, device="meta")
    return _saved_bytes(projector, lambda: projector(video, question, mask))


def _saved_bytes(module: nn.Module, forward: Any) -> int:
    """Untyped-storage bytes saved for backward by `forward()`, each storage once, `module`'s parameters
    excluded (they are counted as weights)."""
    params = {p.untyped_storage()._cdata for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in params:
            seen[storage._cdata] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(seen.values())


# ---- the encoder (extract) -------------------------------------------------------------------------------


def encoder_plan(arch: EncoderArch, num_frames: int, batch: int, budget: int) -> EncoderPlan:
    """fp16 weights + inference activations of `batch` clips: no graph, so about one layer's working set
    at a time (residual, normed input, then the MLP's two intermediate tensors) and the clips' pixels,
    normalised in fp32. An estimate: not yet measured on a GPU."""
    tokens = num_frames // arch.tubelet_size * (arch.crop_size // arch.patch_size) ** 2
    per_clip = tokens * (3 * arch.hidden_size + 2 * arch.intermediate_size) * 2
    per_clip += num_frames * 3 * arch.crop_size**2 * 4
    weights = arch.params * 2
    return EncoderPlan(
        arch.name, arch.params, batch, weights, batch * per_clip, weights + batch * per_clip <= budget
    )


# ---- placement -------------------------------------------------------------------------------------------


def place(
    arch: LLMArch,
    quantization: str,
    step: Step,
    projector: ProjectorCost,
    gpus: int,
    budget: int,
    spread: bool,
) -> BatchPlan:
    """One batch size's per-GPU loads. Not spread: the projector on GPU 0 and the whole LLM on GPU 1 (on
    GPU 0 too with one GPU). Spread: the LLM's layers over every GPU in order, the projector and the
    embeddings beside the first ones, split so that the busiest GPU holds the least."""
    per_layer = _layer_weights(arch, quantization)
    kept, recompute = layer_activation_bytes(arch, step)
    embeddings = arch.params.embeddings * 2
    projector_parts = {
        "projector state": projector.state_bytes,
        "projector activations": projector.activation_bytes(step.batch),
    }
    llm_first = {"LLM weights": embeddings, "prompt embeddings": prompt_bytes(arch, step)}
    # The output head, the final norm (and the rounding of the per-layer share), and the answer logits.
    head = weight_bytes(arch.params, quantization) - embeddings - arch.num_layers * per_layer
    llm_last = {"LLM weights": head, "logits": logits_bytes(arch, step)}
    if spread:
        first = sum(projector_parts.values()) + sum(llm_first.values())
        counts = _split_layers(
            first, per_layer + kept, recompute, sum(llm_last.values()), arch.num_layers, gpus
        )
    else:
        counts = [0, arch.num_layers] if gpus > 1 else [arch.num_layers]
    first_gpu = 0 if spread else len(counts) - 1
    last_gpu = max(g for g, count in enumerate(counts) if count)
    loads = []
    for gpu, count in enumerate(counts):
        parts = dict(projector_parts) if gpu == 0 else {}
        if gpu == first_gpu:
            parts = _merge(parts, llm_first)
        if gpu == last_gpu:
            parts = _merge(parts, llm_last)
        if count:
            parts = _merge(
                parts, {"LLM weights": count * per_layer, "LLM activations": count * kept + recompute}
            )
        loads.append(GpuLoad(gpu, parts))
    return BatchPlan(step.batch, loads, all(g.total <= budget for g in loads))


def _layer_weights(arch: LLMArch, quantization: str) -> int:
    """One decoder layer's weight bytes (the linear layers and norms are the same in every layer)."""
    p = arch.params
    layers_only = LLMParams(
        0, 0, p.linear_weights, p.linear_rows, p.linear_biases, p.other - arch.hidden_size
    )
    return weight_bytes(layers_only, quantization) // arch.num_layers  # the final norm goes with the head


def _merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    merged = dict(a)
    for key, value in b.items():
        merged[key] = merged.get(key, 0) + value
    return merged


def _split_layers(first: int, layer: int, recompute: int, last: int, layers: int, gpus: int) -> list[int]:
    """Layers per GPU, in order, minimising the busiest GPU: the smallest cap that a greedy fill meets."""

    def fill(cap: int) -> list[int] | None:
        counts, load, gpu = [0] * gpus, first, 0
        for _ in range(layers):
            while load + layer + (recompute if counts[gpu] == 0 else 0) > cap:
                gpu += 1
                if gpu == gpus:
                    return None
                load = 0
            load += layer + (recompute if counts[gpu] == 0 else 0)
            counts[gpu] += 1
        return counts if load + last <= cap else None

    low, high = 0, first + last + layers * layer + gpus * recompute
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if fill(mid) is not None else (mid + 1, high)
    return fill(low) or [layers] + [0] * (gpus - 1)


def plan_precision(
    arch: LLMArch,
    quantization: str,
    step: Step,
    projector: ProjectorCost,
    gpus: int,
    memory_gb: float,
    batches: tuple[int, ...] = BATCHES,
) -> PrecisionPlan:
    """The LLM at one precision, at each of `batches` (`step`'s batch is replaced): on one GPU if the first
    batch fits there, else spread over all GPUs, else nowhere."""
    budget = int(memory_gb * 1e9)

    def sweep(spread: bool) -> list[BatchPlan]:
        return [
            place(arch, quantization, replace(step, batch=b), projector, gpus, budget, spread)
            for b in batches
        ]

    plans = sweep(spread=False)
    placement = "one GPU"
    if not plans[0].fits and gpus > 1:
        spread_plans = sweep(spread=True)
        if spread_plans[0].fits:
            plans, placement = spread_plans, "spread"
    fitting = [p for p in plans if p.fits]
    if not fitting:
        placement = "does not fit"
    best = max(fitting, key=lambda p: p.batch) if fitting else None
    return PrecisionPlan(
        llm=arch.label,
        quantization=quantization,
        placement=placement,
        weights_bytes=weight_bytes(arch.params, quantization),
        projector_state_bytes=projector.state_bytes,
        batches=plans,
        batch=best.batch if best else 0,
        verdict=_verdict(arch.label, quantization, placement, best, gpus, memory_gb),
    )


def gpu_name(memory_gb: float) -> str:
    return "T4" if memory_gb == 15 else f"{memory_gb:g} GB"


def _verdict(
    label: str, quantization: str, placement: str, best: BatchPlan | None, gpus: int, memory_gb: float
) -> str:
    where = f"{gpus} x {gpu_name(memory_gb)}"
    if best is None:
        return f"{label} {quantization}: does not fit {gpus} x {memory_gb:g} GB"
    if placement == "spread":
        return (
            f"{label} {quantization}: does not fit one GPU: spread over {gpus} GPUs, batch {best.batch}, "
            f"{gpus} x {best.peak / 1e9:.1f} GB"
        )
    gpu = 1 if gpus > 1 else 0
    return f"{label} {quantization}: GPU {gpu} of {where}, batch {best.batch}, {best.gpus[gpu].total / 1e9:.1f} GB"


def make_plan(
    llms: list[str],
    quantizations: list[str],
    encoder: str,
    projector_cfg: ProjectorConfig,
    num_frames: int,
    pool: int,
    extract_batch: int,
    step: Step,
    gpus: int,
    memory_gb: float,
    batches: tuple[int, ...] = BATCHES,
) -> Plan:
    """Every LLM at every precision, at each of `batches`, on `gpus` GPUs of `memory_gb` (decimal GB) each."""
    if not quantizations:
        raise ConfigError(f"no quantization to plan; give some of {', '.join(QUANTIZATIONS)}")
    if not (math.isfinite(memory_gb) and memory_gb > 0):
        raise ConfigError(f"--memory-gb must be a finite number > 0, got {memory_gb!r}")
    for q in quantizations:
        if q not in QUANTIZATIONS:
            raise ConfigError(f"quantization must be among {', '.join(QUANTIZATIONS)}, got {q!r}")
    if step.prompt_tokens <= projector_cfg.num_visual_queries + step.answer_tokens:
        raise ConfigError(
            f"--prompt-tokens {step.prompt_tokens} leaves no room for a question after "
            f"{projector_cfg.num_visual_queries} soft tokens and {step.answer_tokens} answer tokens"
        )
    enc = read_encoder(encoder)
    side = enc.crop_size // enc.patch_size // pool
    grid = (num_frames // enc.tubelet_size, side, side, enc.hidden_size)
    question_tokens = step.prompt_tokens - projector_cfg.num_visual_queries - step.answer_tokens
    costs: dict[int, ProjectorCost] = {}
    precisions, notes = [], []
    for name in llms:
        arch = read_llm(name)
        if arch.hidden_size not in costs:
            costs[arch.hidden_size] = projector_cost(projector_cfg, grid, arch.hidden_size, question_tokens)
        if arch.model_type not in ACTIVATION_COEFFICIENTS:
            notes.append(
                f"{arch.label}: activations of a {arch.model_type} model not measured; planned with the "
                "largest measured figure (gemma3_text's)"
            )
        if not arch.sdpa:
            notes.append(
                f"{arch.label}: eager attention (no SDPA in transformers): + batch x heads x L x L x "
                f"{EAGER_SCORE_BYTES} bytes per layer for the attention scores"
            )
        precisions += [
            plan_precision(arch, q, step, costs[arch.hidden_size], gpus, memory_gb, batches)
            for q in quantizations
        ]
    return Plan(
        gpus=gpus,
        memory_gb=memory_gb,
        prompt_tokens=step.prompt_tokens,
        answer_tokens=step.answer_tokens,
        gradient_checkpointing=step.gradient_checkpointing,
        encoder=encoder_plan(enc, num_frames, extract_batch, int(memory_gb * 1e9)),
        precisions=precisions,
        notes=notes,
    )
