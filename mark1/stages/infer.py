"""One pass: a video and a question → the answer and the moments that support it (optionally a timeline PNG)."""

from __future__ import annotations

import time
from pathlib import Path

from mark1.config import Config
from mark1.errors import VideoError
from mark1.files import check_output_file
from mark1.model.mark1 import InferResult, Mark1
from mark1.timeline import save_timeline


def infer(
    checkpoint: Path,
    video: Path,
    question: str,
    choices: list[str] | None = None,
    cfg: Config | None = None,
    timeline: Path | None = None,
) -> InferResult:
    """Decode, encode, project and answer with the checkpoint's backbones (or `cfg`'s); with `timeline`,
    also write the saliency PNG there."""
    if not Path(video).is_file():  # before minutes of loading backbones
        raise VideoError(f"{video}: no such video file")
    if timeline is not None:
        check_output_file(timeline, "--timeline")
    model = Mark1.from_pretrained(checkpoint, cfg)
    start = time.perf_counter()
    clip = model.decode(video)  # once, for the answer and the timeline's thumbnails
    result = model.answer(clip, question, choices)
    result.timings_s["decode"] = round(time.perf_counter() - start, 4)
    if timeline is not None:
        save_timeline(result, clip, timeline)
    return result
