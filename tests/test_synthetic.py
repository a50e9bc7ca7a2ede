"""The generated families: every answer follows from how the clip was made."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mark1.metrics import summarize
from mark1.synthetic import (
    COLOURS,
    COUNT,
    FAMILIES,
    ORDER,
    SIDES,
    WHEN,
    make_questions,
    random_clip,
    render_frame,
    timed_clip,
)


@pytest.mark.parametrize("family", ["when", "order", "count"])
def test_timed_clips_place_their_signs_apart_inside_the_clip(family: str) -> None:
    rng = random.Random(0)
    for i in range(200):
        clip = timed_clip(rng, f"c{i}", family)
        starts = [start for *_, start, _ in clip.signs]
        assert starts == sorted(starts) and 6.0 <= clip.duration_s <= 10.0
        for (*_, end), (*_, start, _) in zip(clip.signs, clip.signs[1:], strict=False):
            assert start - end >= 0.8 - 1e-6  # apart: separate moments, separate windows
        assert clip.signs[0][2] >= 0.39 and clip.signs[-1][3] <= clip.duration_s - 0.39
        if family == "order":
            assert len(clip.signs) == 2 and clip.signs[0][0] != clip.signs[1][0]


def _answer_text(row: dict) -> str:
    return row["answer"][3:]


def test_each_timed_question_is_answered_by_how_the_clip_was_made() -> None:
    rng = random.Random(1)
    seen = {"when": set(), "count": set(), "first_position": set()}
    for i in range(300):
        family = ("when", "order", "count")[i % 3]
        clip = timed_clip(rng, f"c{i}", family)
        rows = {r["type"]: r for r in make_questions(clip, rng, "v.mp4", family)}
        spans = [[a, b] for *_, a, b in clip.signs]
        assert all(r["spans"] == spans and len(r["support_frames"]) == 2 * len(spans) for r in rows.values())
        if family == "when":
            middle = (clip.start_s + clip.end_s) / 2
            third = WHEN[1].index(_answer_text(rows["when"]))
            assert third / 3 <= middle / clip.duration_s < (third + 1) / 3
            seen["when"].add(third)
        elif family == "count":
            assert COUNT[1].index(_answer_text(rows["count"])) + 1 == len(clip.signs)
            seen["count"].add(len(clip.signs))
        else:
            first, last = (r for r in make_questions(clip, random.Random(i), "v.mp4", "order"))
            assert first["question"] == ORDER["first"] and _answer_text(first) == clip.signs[0][0]
            assert last["question"] == ORDER["last"] and _answer_text(last) == clip.signs[1][0]
            seen["first_position"].add(first["answer"][0])
    # every answer occurs, and the first sign's colour is not always choice A
    assert seen == {"when": {0, 1, 2}, "count": {1, 2, 3}, "first_position": {"A", "B"}}


def test_every_sign_is_drawn_while_it_is_shown() -> None:
    rng = random.Random(3)
    clip = next(c for c in (timed_clip(rng, f"c{i}", "count") for i in range(50)) if len(c.signs) == 3)
    noise = np.random.default_rng(0)
    h, w = clip.height, clip.width
    for colour, side, start, end in clip.signs:
        frame = render_frame(clip, int((start + end) / 2 * clip.fps), noise)
        cx = w // 2 + (-1 if side == SIDES[0] else 1) * int(0.25 * h)
        assert np.abs(frame[int(0.42 * h), cx].astype(int) - COLOURS[colour]).max() == 0
        before = render_frame(clip, int((start - 0.4) * clip.fps), noise)  # in the gap before it: road
        assert np.abs(before[int(0.42 * h), cx].astype(int) - COLOURS[colour]).max() > 30


def test_side_family_shuffles_only_the_side_choices() -> None:
    rng = random.Random(2)
    orders = set()
    for i in range(40):
        clip = random_clip(rng, f"c{i}")
        colour, side = make_questions(clip, rng, "v.mp4", "side")
        assert colour["type"] == "colour" and colour["choices"][0] == "A. Đỏ"
        assert side["type"] == "side" and _answer_text(side) == clip.side
        orders.add(tuple(side["choices"]))
    assert len(orders) == 2 and set(FAMILIES) >= {"side", "when", "order", "count"}


def test_eval_reports_accuracy_per_question_type() -> None:
    rows = [
        {"kind": "choice", "type": "when", "pred": 0, "answer": 0, "probs": [1, 0, 0]},
        {"kind": "choice", "type": "when", "pred": 1, "answer": 0, "probs": [0, 1, 0]},
        {"kind": "choice", "type": "colour", "pred": 2, "answer": 2, "probs": [0, 0, 1]},
        {"kind": "open", "type": "describe", "text": "x", "answer": "y", "exact_match": False, "f1": 0.0},
        {"kind": "choice", "pred": 0, "answer": 0, "probs": [1, 0]},  # no type: only in the totals
    ]
    assert summarize(rows)["accuracy_by_type"] == {"colour": 1.0, "describe": 0.0, "when": 0.5}
