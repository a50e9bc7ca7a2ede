"""Answering cached questions: one prediction row per question, as eval, predict and validation write them."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mark1.annotations import QARecord
from mark1.cache import FeatureCache
from mark1.data import warn_truncated
from mark1.metrics import exact_match, moments, token_f1
from mark1.model.video_qa import Answer, VideoQAModel


def score_records(
    model: VideoQAModel,
    cache: FeatureCache,
    records: list[QARecord],
    on_item: Callable[[int, int], None] | None = None,
    max_new_tokens: int = 64,
) -> list[dict]:
    """One row per record (the records' `key` must be set): the chosen choice and its probabilities, or the
    generated text of an open question (at most `max_new_tokens`); for every kind the moments, saliency and
    the span head's windows."""
    was_training = model.projector.training
    model.train(False)
    rows = []
    try:
        for i, record in enumerate(records):
            features, _ = cache[record.key]
            times = cache.position_times(record.key).tolist()
            duration = cache.row(record.key)["duration_s"]
            answer = model.answer(
                torch.from_numpy(features),
                record.question,
                record.choices,
                duration_s=duration,
                generate=record.kind == "open",
                max_new_tokens=max_new_tokens,
                where=f"row {record.row} (id {record.id})",
            )
            if answer.truncated:
                warn_truncated(record)
            rows.append(
                {
                    "id": record.id,
                    "video": record.key,
                    "kind": record.kind,
                    "type": record.type,
                    **_answer_fields(record, answer),
                    "moments": [
                        {"time_s": round(t, 3), "score": round(s, 4)}
                        for t, s in moments(answer.saliency, times)
                    ],
                    "windows": [[round(a, 3), round(b, 3), round(c, 4)] for a, b, c in answer.windows],
                    "saliency": [round(s, 5) for s in answer.saliency],
                    "times": [round(t, 4) for t in times],
                    "duration_s": duration,
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


def _answer_fields(record: QARecord, answer: Answer) -> dict:
    if record.kind == "choice":
        correct = None if record.answer is None else answer.index == record.answer
        return {
            "pred": answer.index,
            "letter": record.choices[answer.index][0],
            "probs": [round(p, 6) for p in answer.probs],
            "answer": record.answer,
            "correct": correct,
        }
    if record.kind == "open":
        fields = {"text": answer.text, "answer": record.answer_text}
        if record.answer_text is not None:
            fields |= {
                "exact_match": exact_match(answer.text, record.answer_text),
                "f1": round(token_f1(answer.text, record.answer_text), 4),
            }
        return fields
    return {}
