"""Scoring questions from the cache: `mark1 eval` (metrics against answers) and `mark1 predict` (submissions)."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mark1.annotations import match_videos, require_valid
from mark1.cache import FeatureCache
from mark1.config import Config
from mark1.errors import AnnotationError
from mark1.metrics import summarize
from mark1.model.checkpoint import Checkpoint
from mark1.model.scoring import score_records
from mark1.model.video_qa import VideoQAModel

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict
    metrics_path: Path | None
    predictions_path: Path | None


@dataclass
class PredictResult:
    submission_path: Path
    predictions_path: Path
    num_questions: int
    num_fallback: int  # questions whose video is not in the cache: answered "A" and counted


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def evaluate(
    checkpoint: Path,
    cache_dir: Path,
    annotations: Path,
    out_dir: Path | None = None,
    cfg: Config | None = None,
    model: VideoQAModel | None = None,
    on_item: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Accuracy (overall, by number of choices) and temporal metrics; writes metrics.json + predictions.jsonl."""
    cache = FeatureCache(cache_dir)
    records = require_valid(annotations, cache)
    if not any(r.answer is not None for r in records):
        raise AnnotationError(f"{annotations} has no answers to score; use `mark1 predict` for a test file")
    model = model or Checkpoint.open(checkpoint).load_model(cache.spec, cfg)
    rows = score_records(model, cache, records, on_item)
    metrics = summarize(rows)
    if out_dir is None:
        return EvalResult(metrics, None, None)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_jsonl(out_dir / "predictions.jsonl", rows)
    return EvalResult(metrics, out_dir / "metrics.json", out_dir / "predictions.jsonl")


def predict(
    checkpoint: Path,
    cache_dir: Path,
    annotations: Path,
    submission: Path,
    cfg: Config | None = None,
    on_item: Callable[[int, int], None] | None = None,
) -> PredictResult:
    """Answer every question (no answers needed): `id,answer` letters in input order + predictions.jsonl.

    A question whose video is missing from the cache (e.g. it failed to extract) still gets a row: the
    fallback letter "A", logged and counted.
    """
    cache = FeatureCache(cache_dir)
    records = require_valid(annotations)  # without the cache: a missing video is a fallback, not an error
    unmatched = {i.row for i in match_videos(records, cache.keys())}
    model = Checkpoint.open(checkpoint).load_model(cache.spec, cfg)
    scored = {
        r["id"]: r
        for r in score_records(model, cache, [r for r in records if r.row not in unmatched], on_item)
    }
    for record in records:
        if record.row in unmatched:
            log.warning(
                "row %d (id %s): video %s not in the cache; answering A", record.row, record.id, record.video
            )
    submission.parent.mkdir(parents=True, exist_ok=True)
    with open(submission, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "answer"])
        for record in records:
            writer.writerow([record.id, scored[record.id]["letter"] if record.id in scored else "A"])
    predictions = submission.with_name("predictions.jsonl")
    write_jsonl(predictions, list(scored.values()))
    return PredictResult(submission, predictions, len(records), len(records) - len(scored))
