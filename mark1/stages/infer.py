"""One pass: a video and a question → the answer and the moments that support it (optionally a timeline PNG)."""

from __future__ import annotations

from pathlib import Path

from mark1.config import Config
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
    if timeline is not None:
        check_output_file(timeline, "--timeline")
    model = Mark1.from_pretrained(checkpoint, cfg)
    result = model.answer(video, question, choices)
    if timeline is not None:
        save_timeline(result, model.decode(video), timeline)
    return result
