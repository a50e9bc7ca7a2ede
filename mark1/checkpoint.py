"""Checkpoints: `runs/NAME/{best,last}/` with the projector (safetensors), config.json and the training state.

A checkpoint directory is replaced atomically: written as NAME.tmp, the old one moved aside, the new one
renamed in; a run killed at any moment leaves the previous good checkpoint loadable.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from mark1.cache import CacheSpec
from mark1.config import Config
from mark1.errors import CheckpointError
from mark1.model.projector import Projector
from mark1.prompt import PROMPT_FORMAT

CHECKPOINT_FORMAT = "mark1-checkpoint"
CHECKPOINT_VERSION = 1
STATE_FILE = "training_state.pt"


def save_checkpoint(
    directory: Path,
    projector: Projector,
    cfg: Config,
    spec: CacheSpec,
    state: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> None:
    """Write projector weights, config.json (backbones, cache fingerprint, prompt format) and training state."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(tmp, projector, cfg, spec, state, metrics)
    except (
        OSError,
        RuntimeError,
    ) as err:  # a full disk (torch.save reports it as RuntimeError): old one untouched
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"cannot write checkpoint {directory} ({err}); the previous one there is intact: free disk space "
            "and continue with --resume"
        ) from err
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def _write(
    tmp: Path,
    projector: Projector,
    cfg: Config,
    spec: CacheSpec,
    state: dict[str, Any] | None,
    metrics: dict[str, Any] | None,
) -> None:
    projector.save(tmp)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "encoder": cfg.encoder,
        "llm": cfg.llm,
        "prompt_format": PROMPT_FORMAT,
        "cache": dataclasses.asdict(spec),
        "config": cfg.to_dict(),
        "metrics": metrics or {},
    }
    (tmp / "config.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    if state is not None:
        torch.save(state, tmp / STATE_FILE)


def _resolve(directory: Path) -> Path:
    if (directory / "config.json").is_file():
        return directory
    old = directory.with_name(directory.name + ".old")
    if (old / "config.json").is_file():  # killed between moving the old one aside and renaming the new one in
        return old
    raise CheckpointError(
        f"no Mark-1 checkpoint at {directory} (config.json missing); "
        "point --checkpoint at runs/NAME/best or runs/NAME/last"
    )


def read_meta(directory: Path) -> dict[str, Any]:
    path = _resolve(directory) / "config.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is damaged ({err})") from err
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a Mark-1 checkpoint")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} is checkpoint version {meta.get('version')}, this Mark-1 reads {CHECKPOINT_VERSION}"
        )
    if meta.get("prompt_format") != PROMPT_FORMAT:
        raise CheckpointError(
            f"{path} was trained with prompt format {meta.get('prompt_format')!r}, this Mark-1 "
            f"uses {PROMPT_FORMAT!r}; retrain or use the matching Mark-1 version"
        )
    return meta


def load_projector(directory: Path) -> Projector:
    return Projector.load(_resolve(directory))


def load_config_of(directory: Path) -> Config:
    return Config.from_dict(read_meta(directory)["config"], source=str(directory / "config.json"))


def load_state(directory: Path) -> dict[str, Any]:
    path = _resolve(directory) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path.parent} holds no training state to resume from")
    try:  # weights_only: loading a checkpoint never runs code from it
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged or foreign files
        raise CheckpointError(
            f"cannot read {path} ({type(err).__name__}: {err}); start without --resume"
        ) from err


def check_cache(meta: dict[str, Any], spec: CacheSpec, where: Path) -> None:
    """A checkpoint works only on features of the encoder and sampling it was trained on."""
    trained = CacheSpec(**meta["cache"])
    try:
        spec.check_compatible(trained, where)
    except Exception as err:
        raise CheckpointError(f"checkpoint {where} does not fit this cache: {err}") from err
