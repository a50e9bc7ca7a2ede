"""Shared fixtures: tiny backbones written once per session, generated videos, and the tiny config."""

from __future__ import annotations

import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mark1.config import Config, load_config
from mark1.tiny import TinySizes


@dataclass
class Tiny:
    """Where the tiny random backbones were written; their sizes (crop_size, video_dim, llm_dim, num_frames,
    grid) are mark1.tiny.TinySizes', the one definition."""

    encoder_dir: Path
    llm_dir: Path
    sizes: TinySizes = field(default_factory=TinySizes)

    def __getattr__(self, name: str):
        return getattr(self.sizes, name)

    def config(self, *overrides: str) -> Config:
        return load_config(
            "tiny",
            [f"encoder={self.encoder_dir}", f"llm={self.llm_dir}", "extract.decode_workers=0", *overrides],
        )


MODEL_FIXTURES = {"tiny", "trained", "small", "model"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tiers: `unit` (no model, marked here), the default run, `slow` (marked in place), `gpu` (skipped
    without CUDA)."""
    import torch

    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if not MODEL_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.unit)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)


@pytest.fixture(scope="session", autouse=True)
def mark1_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep every test away from the user's ~/.cache/mark1."""
    home = tmp_path_factory.mktemp("mark1-home")
    os.environ["MARK1_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    from mark1.tiny import write_tiny_backbones

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


@pytest.fixture
def model(tiny: Tiny):
    """A fresh, seeded tiny VideoQAModel on the CPU."""
    import torch

    from mark1.backbones import load_llm, load_tokenizer
    from mark1.model.llm import FrozenLLM
    from mark1.model.projector import Projector
    from mark1.model.video_qa import VideoQAModel

    torch.manual_seed(0)
    llm = FrozenLLM(load_llm(str(tiny.llm_dir)), load_tokenizer(str(tiny.llm_dir)))
    return VideoQAModel(llm, Projector(tiny.config().projector, tiny.video_dim, tiny.llm_dim))


@dataclass
class Trained:
    """A small run trained once per session: generated data, its cache, and runs/NAME."""

    data_dir: Path
    cache_dir: Path
    run_dir: Path
    config: Config


@pytest.fixture(scope="session")
def trained(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from mark1.demo import make_data
    from mark1.stages.extract import extract
    from mark1.stages.train import train

    root = tmp_path_factory.mktemp("trained")
    make_data(root / "data", 10, "visual", seed=5)
    cfg = tiny.config("train.epochs=2", "train.val_fraction=0.25")
    extract(cfg, root / "data" / "videos", root / "cache")
    train(cfg, root / "cache", root / "data" / "train.json", root / "run")
    return Trained(root / "data", root / "cache", root / "run", cfg)


@dataclass
class CliRun:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """Runs `mark1 ARGS...` in this process through `mark1.cli.main`, its error boundary included."""
    from mark1.cli import main

    def run(*args: object) -> CliRun:
        monkeypatch.setattr(sys, "argv", ["mark1", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0
        out, err = capsys.readouterr()
        return CliRun(code, out, err)

    return run
