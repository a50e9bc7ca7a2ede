"""Answering cached questions: one prediction row per question, as eval, predict and validation write them."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mark1.annotations import QARecord
from mark1.cache import FeatureCache
from mark1.data import warn_truncated
from mark1.metrics import moments
from mark1.model.video_qa import VideoQAModel


def score_records(
    model: VideoQAModel,
    cache: FeatureCache,
    records: list[QARecord],
    on_item: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """One row per record (the records' `key` must be set): choice, probabilities, moments and saliency."""
    was_training = model.projector.training
    model.train(False)
    rows = []
    try:
        for i, record in enumerate(records):
            features, _ = cache[record.key]
            times = cache.position_times(record.key).tolist()
            where = f"row {record.row} (id {record.id})"
            answer = model.answer(torch.from_numpy(features), record.question, record.choices, where=where)
            if answer.truncated:
                warn_truncated(record)
            rows.append(
                {
                    "id": record.id,
                    "video": record.key,
                    "pred": answer.index,
                    "letter": record.choices[answer.index][0],
                    "probs": [round(p, 6) for p in answer.probs],
                    "answer": record.answer,
                    "correct": None if record.answer is None else answer.index == record.answer,
                    "moments": [
                        {"time_s": round(t, 3), "score": round(s, 4)}
                        for t, s in moments(answer.saliency, times)
                    ],
                    "saliency": [round(s, 5) for s in answer.saliency],
                    "times": [round(t, 4) for t in times],
                    "duration_s": cache.row(record.key)["duration_s"],
                    "support_frames": record.support_frames,
                    "spans": [list(s) for s in record.spans],
                    "truncated": answer.truncated,
                }
            )
            if on_item is not None:
                on_item(i + 1, len(records))
    finally:
        model.train(was_training)
    return rows
