"""Scoring questions from the cache: `mark1 eval` (metrics against answers) and `mark1 predict` (submissions)."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mark1.annotations import QARecord
from mark1.cache import FeatureCache
from mark1.config import Config
from mark1.errors import AnnotationError
from mark1.files import atomic_file, check_output_dir, check_output_file, write_atomic
from mark1.matching import match_videos, require_valid
from mark1.metrics import summarize
from mark1.model.checkpoint import Checkpoint
from mark1.model.scoring import score_records
from mark1.model.video_qa import VideoQAModel
from mark1.report import REPORT_WORST, write_report

log = logging.getLogger(__name__)
PREDICTIONS, UNMATCHED = "predictions.jsonl", "unmatched.jsonl"  # written beside the submission


@dataclass
class EvalResult:
    metrics: dict
    metrics_path: Path | None
    predictions_path: Path | None
    report_path: Path | None = None


@dataclass
class PredictResult:
    submission_path: Path
    predictions_path: Path
    num_questions: int
    num_fallback: int  # questions whose video is not in the cache: answered "A" (or left blank) and counted


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def evaluate(
    checkpoint: Path,
    cache_dir: Path,
    annotations: Path,
    out_dir: Path | None = None,
    cfg: Config | None = None,
    on_item: Callable[[int, int], None] | None = None,
    report: Path | None = None,
    report_worst: int = REPORT_WORST,
    videos: Path | None = None,
) -> EvalResult:
    """Accuracy (overall, by number of choices), exact match and F1 of open answers, and temporal metrics;
    writes predictions.jsonl, then metrics.json (last, naming the predictions' sha256: the two always
    belong together). `report`: also an HTML page of the metrics and the `report_worst` worst questions,
    with their frames from the videos (found under `videos`, else beside the annotation file)."""
    cache = FeatureCache(cache_dir)
    records = require_valid(annotations, cache)
    if not any(r.learnable for r in records):
        raise AnnotationError(
            f"{annotations} has no answers, support frames or spans to score; use `mark1 predict` for a test file"
        )
    if out_dir is not None:
        check_output_dir(out_dir, "--out")
    if report is not None:
        check_output_file(report, "--report")
    model, cfg = _load(checkpoint, cache, cfg)
    rows = score_records(model, cache, records, on_item, cfg.answer.max_new_tokens)
    metrics = summarize(rows)
    result, shown = EvalResult(metrics, None, None), metrics
    if out_dir is not None:
        predictions = jsonl_bytes(rows)
        write_atomic(out_dir / "predictions.jsonl", predictions)
        summary = {**metrics, "predictions_sha256": hashlib.sha256(predictions).hexdigest()}
        write_atomic(out_dir / "metrics.json", json.dumps(summary, indent=2).encode())
        result, shown = EvalResult(metrics, out_dir / "metrics.json", out_dir / "predictions.jsonl"), summary
    if report is not None:  # last: the page shows what metrics.json holds, the predictions' sha256 included
        write_report(report, shown, rows, annotations, records, videos, report_worst)
        result.report_path = report
    return result


def predict(
    checkpoint: Path,
    cache_dir: Path,
    annotations: Path,
    submission: Path,
    cfg: Config | None = None,
    on_item: Callable[[int, int], None] | None = None,
) -> PredictResult:
    """Answer every question (no answers needed): `id,answer` in input order + predictions.jsonl. The answer
    is a letter for a multiple-choice question, the generated text for an open one (CSV-quoted where it
    needs it), blank for a grounding query (its windows are in predictions.jsonl).

    A question whose video is missing from the cache (e.g. it failed to extract) still gets a row: the
    fallback letter "A" (blank for the other kinds), counted, and listed in unmatched.jsonl beside the
    submission.
    """
    cache = FeatureCache(cache_dir)
    records = require_valid(annotations)  # without the cache: a missing video is a fallback, not an error
    check_output_file(submission, "--out")
    if submission.name in (PREDICTIONS, UNMATCHED):
        raise AnnotationError(
            f"--out {submission} would be overwritten by {submission.name}; name it e.g. submission.csv"
        )
    unmatched_rows = {i.row for i in match_videos(records, cache.keys())}
    model, cfg = _load(checkpoint, cache, cfg)
    matched = [r for r in records if r.row not in unmatched_rows]
    scored = {r["id"]: r for r in score_records(model, cache, matched, on_item, cfg.answer.max_new_tokens)}
    unmatched = [r for r in records if r.row in unmatched_rows]
    write_atomic(submission.with_name(PREDICTIONS), jsonl_bytes(list(scored.values())))
    if not unmatched:  # one from an earlier run would list questions this submission answered
        submission.with_name(UNMATCHED).unlink(missing_ok=True)
    if unmatched:
        listed = [{"row": r.row, "id": r.id, "video": r.video} for r in unmatched]
        write_atomic(submission.with_name(UNMATCHED), jsonl_bytes(listed))
        log.warning(
            "%d question(s) have no cached video (e.g. row %d, id %s: %s), answered A (or blank); all are "
            "listed in %s",
            len(unmatched),
            unmatched[0].row,
            unmatched[0].id,
            unmatched[0].video,
            submission.with_name(UNMATCHED),
        )
    with atomic_file(
        submission, "w", newline="", encoding="utf-8"
    ) as f:  # last: the submission is the commit
        writer = csv.writer(f)
        writer.writerow(["id", "answer"])
        for record in records:
            writer.writerow([record.id, _submitted(record, scored.get(record.id))])
    return PredictResult(submission, submission.with_name(PREDICTIONS), len(records), len(unmatched))


def _load(checkpoint: Path, cache: FeatureCache, cfg: Config | None) -> tuple[VideoQAModel, Config]:
    """The checkpoint's model for this cache's features, and the config it answers with (`cfg`, else the
    checkpoint's own)."""
    ckpt = Checkpoint.open(checkpoint)
    cfg = cfg or ckpt.config
    return ckpt.load_model(cache.spec, cfg), cfg


def _submitted(record: QARecord, row: dict | None) -> str:
    """The submission's answer cell: a letter, an open question's text, or blank for a grounding query."""
    if record.kind == "choice":
        return row["letter"] if row else "A"
    return row["text"] if row and record.kind == "open" else ""
