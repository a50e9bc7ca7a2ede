"""Where each part runs: a device name for extraction, a device map for training and answering."""

from __future__ import annotations

import os

import torch

from mark1.errors import ConfigError

PARTS = ("encoder", "projector", "llm")


def pick_device(name: str = "auto") -> torch.device:
    """`auto` → this process's GPU (its own under torchrun) when there is one, else the CPU."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"{name!r} is not a device name; use auto, cpu or cuda:N") from err
    _check_exists(device, name)
    return device


def parse_device_map(spec: str) -> dict[str, torch.device]:
    """`projector=cuda:0,llm=cuda:1` (and optionally `encoder=`) → a device per part.

    `auto`: two GPUs → encoder and projector on cuda:0, the LLM on cuda:1 (each 16 GB T4 holds one
    backbone); one GPU → everything on it; none → the CPU. Under torchrun, `auto` is this rank's own GPU.
    """
    if spec == "auto":
        count = torch.cuda.device_count()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 or count < 2:
            return dict.fromkeys(PARTS, pick_device("auto"))
        return {
            "encoder": torch.device("cuda:0"),
            "projector": torch.device("cuda:0"),
            "llm": torch.device("cuda:1"),
        }
    placement = {}
    for part in spec.split(","):
        name, sep, device = part.partition("=")
        if not sep or name.strip() not in PARTS:
            raise ConfigError(f"device map {spec!r}: expected items like projector=cuda:0,llm=cuda:1")
        try:
            placement[name.strip()] = torch.device(device.strip())
        except RuntimeError as err:
            raise ConfigError(f"device map {spec!r}: {device.strip()!r} is not a device name") from err
    missing = {"projector", "llm"} - set(placement)
    if missing:
        raise ConfigError(f"device map {spec!r} does not place {', '.join(sorted(missing))}")
    for device in placement.values():
        _check_exists(device, spec)
    placement.setdefault("encoder", placement["projector"])
    return placement


def _check_exists(device: torch.device, asked: str) -> None:
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise ConfigError(f"{asked!r} names {device}, which this machine does not have; use cpu")
