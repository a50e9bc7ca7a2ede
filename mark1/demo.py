"""The offline end-to-end run: generated videos → tiny backbones → extract → train → eval → infer.

It strings the stages together, so it sits above them, beside the CLI (a stage never imports another).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from mark1.config import Config, load_config
from mark1.files import check_output_dir
from mark1.model.mark1 import InferResult
from mark1.stages.evaluate import EvalResult, evaluate, predict
from mark1.stages.extract import ExtractResult, extract
from mark1.stages.infer import infer
from mark1.stages.train import TrainResult, train
from mark1.synthetic import generate, write_roadbuddy

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    out_dir: Path
    extract: ExtractResult
    train: TrainResult
    eval: EvalResult
    infer: InferResult
    infer_question: str
    infer_video: Path
    timeline: Path | None


def make_data(data_dir: Path, num_videos: int, family: str, seed: int, test_share: float = 0.2) -> None:
    """Generated clips and their questions, split by video: train.json, test.json, public_test.json."""
    rows = generate(data_dir, num_videos, seed=seed, family=family)
    test_videos = {
        f"videos/clip_{i:04d}.mp4"
        for i in range(num_videos - max(1, round(num_videos * test_share)), num_videos)
    }
    write_roadbuddy(data_dir / "train.json", [r for r in rows if r["video_path"] not in test_videos])
    test = [r for r in rows if r["video_path"] in test_videos]
    write_roadbuddy(data_dir / "test.json", test)
    write_roadbuddy(data_dir / "public_test.json", test, with_answers=False)


def run_demo(
    out_dir: Path,
    num_videos: int = 120,
    family: str = "visual",
    seed: int = 0,
    cfg: Config | None = None,
    progress: Callable[[str, str], AbstractContextManager] | None = None,
) -> DemoResult:
    """Run every stage on generated data; `progress(name, unit)` yields an `update(done, total)` callback."""
    check_output_dir(out_dir, "--out")
    progress = progress or (lambda name, unit: nullcontext(None))
    cfg = cfg or load_config("tiny")
    data_dir = out_dir / "data"
    if not (data_dir / "public_test.json").is_file():
        log.info("generating %d %s-family clips in %s", num_videos, family, data_dir)
        make_data(data_dir, num_videos, family, seed)
    with progress("extract", "clips") as update:
        extracted = extract(cfg, data_dir / "videos", out_dir / "cache", on_clip=update)
    run_dir = out_dir / "run"
    resume = (run_dir / "last").exists()
    with progress("train", "steps") as update:
        trained = train(
            cfg, out_dir / "cache", data_dir / "train.json", run_dir, resume=resume, on_step=update
        )
    with progress("eval", "questions") as update:
        scored = evaluate(
            run_dir / "best", out_dir / "cache", data_dir / "test.json", out_dir / "eval", cfg, on_item=update
        )
    predict(
        run_dir / "best", out_dir / "cache", data_dir / "public_test.json", out_dir / "submission.csv", cfg
    )
    question = json.loads((data_dir / "test.json").read_text(encoding="utf-8"))["data"][0]
    video = data_dir / question["video_path"]
    timeline = out_dir / "timeline.png" if importlib.util.find_spec("matplotlib") else None
    answer = infer(run_dir / "best", video, question["question"], question["choices"], cfg, timeline)
    return DemoResult(out_dir, extracted, trained, scored, answer, question["question"], video, timeline)
