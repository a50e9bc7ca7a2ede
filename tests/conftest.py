"""Shared fixtures: tiny backbones written once per session, generated videos, and the tiny config."""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from mark1.config import Config, load_config


@dataclass
class Tiny:
    """Paths and sizes of the tiny random backbones the tests run on (see mark1.backbones.TinySizes)."""

    encoder_dir: Path
    llm_dir: Path
    crop_size: int = 64
    video_dim: int = 64
    llm_dim: int = 64
    num_frames: int = 16

    @property
    def grid(self) -> list[int]:  # [T', H', W', D] with tubelet 2, patch 16
        return [self.num_frames // 2, self.crop_size // 16, self.crop_size // 16, self.video_dim]

    def config(self, *overrides: str) -> Config:
        return load_config(
            "tiny",
            [f"encoder={self.encoder_dir}", f"llm={self.llm_dir}", "extract.decode_workers=0", *overrides],
        )


@pytest.fixture(scope="session", autouse=True)
def mark1_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep every test away from the user's ~/.cache/mark1."""
    home = tmp_path_factory.mktemp("mark1-home")
    os.environ["MARK1_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    from mark1.backbones import write_tiny_backbones

    encoder_dir, llm_dir = write_tiny_backbones(tmp_path_factory.mktemp("tiny"))
    return Tiny(encoder_dir, llm_dir)


@pytest.fixture(scope="session")
def sign_videos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """Six generated clips (fps 12/25/30, several sizes) and their RoadBuddy-style questions."""
    from mark1.synthetic import generate

    root = tmp_path_factory.mktemp("signs")
    rows = generate(root, 6, seed=3, min_s=3.0, max_s=5.0)
    return root / "videos", rows


@pytest.fixture
def videos(sign_videos: tuple[Path, list[dict]], tmp_path: Path) -> Path:
    """A private copy of the generated clips that a test may damage or extend."""
    target = tmp_path / "videos"
    shutil.copytree(sign_videos[0], target)
    return target


@pytest.fixture
def rng() -> random.Random:
    return random.Random(0)


@dataclass
class Trained:
    """A small run trained once per session: generated data, its cache, and runs/NAME."""

    data_dir: Path
    cache_dir: Path
    run_dir: Path
    config: Config


@pytest.fixture(scope="session")
def trained(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from mark1.stages.demo import make_data
    from mark1.stages.extract import extract
    from mark1.stages.train import train

    root = tmp_path_factory.mktemp("trained")
    make_data(root / "data", 10, "visual", seed=5)
    cfg = tiny.config("train.epochs=2", "train.val_fraction=0.25")
    extract(cfg, root / "data" / "videos", root / "cache")
    train(cfg, root / "cache", root / "data" / "train.json", root / "run")
    return Trained(root / "data", root / "cache", root / "run", cfg)
