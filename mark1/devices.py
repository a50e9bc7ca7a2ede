"""Where each part runs: a device name for extraction, a device map for training and answering."""

from __future__ import annotations

import os
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Placement:
    """Where each part runs. The LLM may be spread over several devices, its first layers on the first."""

    encoder: torch.device
    projector: torch.device
    llm: tuple[torch.device, ...]


def parse_device_map(spec: str) -> Placement:
    """`projector=cuda:0,llm=cuda:1` (and optionally `encoder=`) → a device per part; `llm=cuda:0+cuda:1`
    spreads the LLM's layers over both GPUs (an LLM too big for one), up to `llm.max_memory_gb` each.

    `auto`: two GPUs → encoder and projector on cuda:0, the LLM on cuda:1 (each 16 GB T4 holds one
    backbone); one GPU → everything on it; none → the CPU. Under torchrun, `auto` is this rank's own GPU.
    """
    if spec == "auto":
        count = torch.cuda.device_count()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 or count < 2:
            device = pick_device("auto")
            return Placement(device, device, (device,))
        return Placement(torch.device("cuda:0"), torch.device("cuda:0"), (torch.device("cuda:1"),))
    placement: dict[str, tuple[torch.device, ...]] = {}
    for part in spec.split(","):
        name, sep, devices = part.partition("=")
        if not sep or name.strip() not in PARTS:
            raise ConfigError(f"device map {spec!r}: expected items like projector=cuda:0,llm=cuda:1")
        if name.strip() in placement:
            raise ConfigError(
                f"device map {spec!r} places {name.strip()} twice; spread the LLM with llm=cuda:0+cuda:1"
            )
        try:
            placement[name.strip()] = tuple(torch.device(d.strip()) for d in devices.split("+"))
        except RuntimeError as err:
            raise ConfigError(f"device map {spec!r}: {devices.strip()!r} is not a device name") from err
    missing = {"projector", "llm"} - set(placement)
    if missing:
        raise ConfigError(f"device map {spec!r} does not place {', '.join(sorted(missing))}")
    for name, devices in placement.items():
        if len(devices) > 1 and (name != "llm" or any(d.type != "cuda" for d in devices)):
            raise ConfigError(
                f"device map {spec!r}: only the LLM can be spread, and only over GPUs (llm=cuda:0+cuda:1)"
            )
        for device in devices:
            _check_exists(device, spec)
    projector = placement["projector"][0]
    return Placement(placement.get("encoder", (projector,))[0], projector, placement["llm"])


def _check_exists(device: torch.device, asked: str) -> None:
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{asked!r} names {device}; Mark-1 runs on cpu or cuda:N")
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise ConfigError(f"{asked!r} names {device}, which this machine does not have; use cpu")
