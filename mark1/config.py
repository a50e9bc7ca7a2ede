"""Dataclass configs for every stage and the one YAML reader (`load_config`)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import string
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mark1.errors import CheckpointError, ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
DECODE_BACKENDS = ("auto", "pyav", "decord")  # auto: the fastest here, see mark1.video.resolve_backend
QUANTIZATIONS = (
    "none",
    "int8",
    "nf4",
)  # of the frozen LLM's weights (int8/nf4: bitsandbytes, the [quant] extra)
PROMPT_TEMPLATES = ("auto", "chat", "plain")  # auto: the tokenizer's chat template where it has one
TRACKERS = ("none", "tensorboard", "wandb")  # where training curves go besides metrics.jsonl (mark1.tracking)


def mark1_home() -> Path:
    """Where tiny backbones and other generated assets live (`$MARK1_HOME`, default ~/.cache/mark1)."""
    return Path(os.environ.get("MARK1_HOME") or Path.home() / ".cache" / "mark1")


def _check_backend(key: str, value: str) -> None:
    if value not in DECODE_BACKENDS:
        raise ConfigError(f"{key} must be one of {', '.join(DECODE_BACKENDS)}, got {value!r}")


@dataclass
class VideoConfig:
    num_frames: int = 16  # frames sampled uniformly over each clip
    pool: int = 1  # average pool x pool patches before caching (2 = 4x smaller cache)

    def __post_init__(self) -> None:
        if self.num_frames < 2 or self.num_frames % 2:
            raise ConfigError(
                f"video.num_frames must be an even number >= 2 (tubelet 2), got {self.num_frames!r}"
            )
        if self.pool < 1:
            raise ConfigError(f"video.pool must be >= 1, got {self.pool!r}")


@dataclass
class ExtractConfig:
    batch_size: int = 4  # clips per encoder call
    decode_workers: int = 2  # decoding processes feeding the encoder; 0 decodes in the main process
    decode_backend: str = "auto"  # auto, pyav or decord: same frames, see mark1.video
    shard_clips: int = 256  # roll a shard over after this many clips...
    shard_mb: int = 1024  # ...or this many megabytes
    device: str = "auto"  # auto = cuda:0 when present, else cpu
    verify: bool = False  # read every cached clip first (as `mark1 cache verify`) and redo the damaged ones
    # local: decode workers feed one encoder here; ray: a Ray Data pipeline over a cluster (mark1.ray_pipeline)
    engine: str = "local"
    address: str | None = None  # engine ray: a running cluster ("auto", "ray://HOST:10001"); none: local

    def __post_init__(self) -> None:
        for name in ("batch_size", "shard_clips", "shard_mb"):
            if getattr(self, name) < 1:
                raise ConfigError(f"extract.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.decode_workers < 0:
            raise ConfigError(f"extract.decode_workers must be >= 0, got {self.decode_workers!r}")
        _check_backend("extract.decode_backend", self.decode_backend)
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"extract.engine must be local or ray, got {self.engine!r}")


@dataclass
class ProjectorConfig:
    hidden_size: int = 1024  # BERT-style fusion width
    num_heads: int = 16
    intermediate_size: int = 4096
    num_fusion_layers: int = 2
    num_visual_queries: int = 32  # soft tokens placed in the LLM prompt
    num_temporal_queries: int = 5
    dropout: float = 0.1
    max_temporal_positions: int = 64  # learned temporal position table size (T' = frames / 2)
    max_spatial_positions: int = 64  # learned row / column table size (H', W')
    temporal_head: str = "scoring"  # "scoring" (per-position, any T') or "seed" (MLP to fixed T' logits)
    saliency_reread: bool = True  # visual queries re-read the video weighted by the temporal saliency
    span_head: bool = True  # each temporal query also predicts a window (centre, width) with a confidence
    # The fusion also reads one token per temporal position (its patches pooled, with its time embedding), so
    # that what came first and how many times something appeared are worked out beside the question.
    fuse_timeline: bool = True

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"projector.hidden_size {self.hidden_size} must be divisible by projector.num_heads {self.num_heads}"
            )
        if self.temporal_head not in ("scoring", "seed"):
            raise ConfigError(
                f"projector.temporal_head must be 'scoring' or 'seed', got {self.temporal_head!r}"
            )


# What a projector saved before a part existed had instead of it: read with these, it loads as it was saved.
PROJECTOR_BEFORE = {"span_head": False, "fuse_timeline": False}
# Parts tried and taken out again, with the value under which a projector saved with one is still this model.
PROJECTOR_RETIRED = {"time_tokens": False}


def saved_projector(fields: dict, where: object) -> dict:
    """A projector config saved by any Mark-1, as this one reads it: parts added since filled in as they were,
    retired parts dropped (a projector that used one cannot be loaded: retrain it)."""
    for key, value in PROJECTOR_RETIRED.items():
        if fields.get(key, value) != value:
            raise CheckpointError(
                f"{where} was trained with projector.{key}, which this Mark-1 no longer has; retrain"
            )
    return {**PROJECTOR_BEFORE, **{k: v for k, v in fields.items() if k not in PROJECTOR_RETIRED}}


@dataclass
class TrainConfig:
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1  # of all optimizer steps, then cosine to 0
    batch_size: int = 4
    grad_accum: int = 1
    epochs: int = 5
    lambda_temp: float = 2.0  # weight of the saliency BCE next to the answer cross-entropy
    pos_weight: float = 10.0  # BCE weight of positive (support) positions
    saliency_radius_s: float = 0.5  # positions this close to a support frame are targets too
    # The span head's loss where rows have spans, Moment-DETR's weights: L1 on (centre, width), generalized
    # IoU, and foreground / background of each predicted window (also the weights of its matching cost).
    span_l1: float = 10.0
    span_giou: float = 1.0
    span_foreground: float = 4.0
    max_grad_norm: float = 1.0
    val_fraction: float = 0.1  # held-out share of videos when no --val file is given
    eval_every: int = 0  # also evaluate every N optimizer steps (0: once per epoch)
    save_every: int = 0  # also save last/ every N optimizer steps (0: once per epoch)
    log_every: int = 10  # optimizer steps between metrics.jsonl lines
    num_workers: int = 0  # cache-reading loader workers
    seed: int = 0
    device_map: str = "auto"  # e.g. "projector=cuda:0,llm=cuda:1"; auto splits over two GPUs
    # also write metrics.jsonl's rows to runs/NAME/tensorboard/ or an offline wandb run (their [extras])
    tracker: str = "none"

    def __post_init__(self) -> None:
        if self.tracker not in TRACKERS:
            raise ConfigError(f"train.tracker must be one of {', '.join(TRACKERS)}, got {self.tracker!r}")
        for name in ("batch_size", "grad_accum", "epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"train.val_fraction must be in [0, 1), got {self.val_fraction!r}")
        for name in (
            "lr",
            "weight_decay",
            "warmup_fraction",
            "lambda_temp",
            "pos_weight",
            "saliency_radius_s",
            "span_l1",
            "span_giou",
            "span_foreground",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0) or (name in ("lr", "pos_weight") and value == 0):
                raise ConfigError(
                    f"train.{name} must be a finite number {'>' if name in ('lr', 'pos_weight') else '>='} 0, got {value!r}"
                )
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ConfigError(f"train.max_grad_norm must be a finite number > 0, got {self.max_grad_norm!r}")


@dataclass
class PromptConfig:
    """How a question becomes a prompt, the same in training and answering (checkpoints keep it)."""

    max_question_tokens: int = 256  # longer questions are cut, with a warning naming the row
    max_choice_tokens: int = 64  # per choice
    max_answer_tokens: int = 64  # an open question's free-text answer, in training (longer ones are cut)
    max_prompt_tokens: int = 2048  # the whole prompt with its soft tokens and answer; a longer row is refused
    # chat: the tokenizer's chat template; plain: Mark-1's own (see mark1.prompt.PLAIN_TEMPLATE);
    # auto: chat where the tokenizer has a template. A checkpoint records the one it was trained with.
    template: str = "auto"

    def __post_init__(self) -> None:
        for name in ("max_question_tokens", "max_choice_tokens", "max_answer_tokens", "max_prompt_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"prompt.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.template not in PROMPT_TEMPLATES:
            raise ConfigError(
                f"prompt.template must be one of {', '.join(PROMPT_TEMPLATES)}, got {self.template!r}"
            )


@dataclass
class LLMConfig:
    """The frozen LLM: which one, and how its weights sit in memory."""

    name: str = "Qwen/Qwen3-0.6B"  # hub id or local directory of any causal LM (Qwen, Llama, Mistral, Gemma)
    quantization: str = (
        "none"  # none: fp16 on CUDA (fp32 on CPU); int8 or nf4: bitsandbytes, pip install -e ".[quant]"
    )
    # Recompute each LLM layer during the backward pass instead of keeping its activations: the projector's
    # gradient flows back through every layer, so this is most of the step's memory (see `mark1 plan`).
    gradient_checkpointing: bool = False
    max_memory_gb: float = 0.0  # per GPU when the device map spreads the LLM over several (0: all of it)

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"llm.quantization must be one of {', '.join(QUANTIZATIONS)}, got {self.quantization!r}"
            )
        if not (math.isfinite(self.max_memory_gb) and self.max_memory_gb >= 0):
            raise ConfigError(f"llm.max_memory_gb must be a finite number >= 0, got {self.max_memory_gb!r}")


@dataclass
class AnswerConfig:
    """How eval, predict and infer place the model and read a video (training places by train.device_map)."""

    device_map: str = "auto"  # e.g. "encoder=cuda:0,projector=cuda:1,llm=cuda:1"; auto splits over two GPUs
    decode_backend: str = "auto"  # infer's decoder; the cache records the one that built it
    max_new_tokens: int = 64  # length limit of a free-text answer

    def __post_init__(self) -> None:
        _check_backend("answer.decode_backend", self.decode_backend)
        if self.max_new_tokens < 1:
            raise ConfigError(f"answer.max_new_tokens must be >= 1, got {self.max_new_tokens!r}")


@dataclass
class Config:
    """Everything a Mark-1 run needs; YAML sections and `--set section.key=value` use these names."""

    encoder: str = "facebook/vjepa2-vitg-fpc64-256"  # hub id or local directory
    llm: LLMConfig = field(default_factory=LLMConfig)
    # Backbone weights as safetensors only: a .bin file is a pickle, which runs code when loaded.
    allow_pickle_weights: bool = False  # true only for model files you trust
    video: VideoConfig = field(default_factory=VideoConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> Config:
        return _build(cls, _llm_section(data), source)


def resolve_config_path(name: str | Path) -> Path:
    """A path, or the bare name of a bundled config ("tiny", "mark1-vjepa2-qwen3")."""
    path = Path(name)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / f"{path.stem}.yaml"
    if path.parent == Path(".") and bundled.is_file():
        return bundled
    available = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config file {str(name)!r} not found; give a YAML path or one of: {available}")


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: Config | None = None
) -> Config:
    """Read a YAML config (or start from `base`, or the defaults), apply `section.key=value` overrides,
    expand env vars in model paths."""
    data: dict[str, Any] = base.to_dict() if base is not None else {}
    source = "checkpoint config" if base is not None else "defaults"
    if path is not None:
        file = resolve_config_path(path)
        source = str(file)
        try:
            data = _yaml(file.read_text(encoding="utf-8"), str(file)) or {}
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read {file} as UTF-8 text ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{file} must hold a mapping of sections, got {type(data).__name__}")
    data = _llm_section(data)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key = "llm.name" if key.strip() == "llm" else key  # `--set llm=DIR`, as before the llm section
        *parents, leaf = key.strip().split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = _yaml(value, f"--set {item!r}")
    cfg = Config.from_dict(data, source)
    cfg.encoder = expand_path(cfg.encoder)
    cfg.llm.name = expand_path(cfg.llm.name)
    return cfg


def _llm_section(data: Any) -> Any:
    """`llm: NAME` (configs and checkpoints from before the llm section) is `llm: {name: NAME}`."""
    if isinstance(data, dict) and isinstance(data.get("llm"), str):
        return {**data, "llm": {"name": data["llm"]}}
    return data


def _yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where} is not valid YAML{at}: {problem}") from err


def with_flags(cfg: Config, flags: dict[str, Any]) -> Config:
    """A copy of `cfg` with typed values set by dotted key (`"train.lr": 1e-4`, `"llm.name": "dir"`); None means
    "not given". Each section is rebuilt with `dataclasses.replace`, so its checks run on the new values."""
    cfg = copy.deepcopy(cfg)  # the result shares no section with the caller's config
    given: dict[str, dict[str, Any]] = {}
    for key, value in flags.items():
        if value is None:
            continue
        section, _, name = ("llm.name" if key == "llm" else key).rpartition(".")
        given.setdefault(section, {})[name] = value
    top = given.pop("", {})
    for section, values in given.items():
        top[section] = dataclasses.replace(getattr(cfg, section), **values)
    cfg = dataclasses.replace(cfg, **top)
    llm = dataclasses.replace(cfg.llm, name=expand_path(cfg.llm.name))
    return dataclasses.replace(cfg, encoder=expand_path(cfg.encoder), llm=llm)


def expand_path(value: str) -> str:
    """Expand `${MARK1_HOME}`, other env vars and `~` in a model path; hub ids pass through unchanged."""
    env = {**os.environ, "MARK1_HOME": str(mark1_home())}
    return os.path.expanduser(string.Template(value).safe_substitute(env))


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and values of the wrong type."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value, f"{where}: {name}")
        else:
            kwargs[name] = _coerce(value, kind, f"{where}: {name}")
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, where: str) -> Any:
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        if value is None and type(None) in typing.get_args(kind):
            return None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if kind is float and isinstance(value, str):  # YAML reads "5e-3" (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {kind.__name__}, got {value!r}")
    return value
