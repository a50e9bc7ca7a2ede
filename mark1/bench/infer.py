"""`mark1 infer`'s one pass on a clip at RoadBuddy's size, through `Mark1.answer` itself: decode (per
backend), encode and answer 4 choices, as its own per-step timings report them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mark1.bench.measure import BenchResult, add_peak, reset_peak
from mark1.bench.workload import CHOICES, INFER_CLIP, QUESTION, write_bench_clips
from mark1.cache import CacheSpec
from mark1.config import Config, with_flags
from mark1.encoder import VideoEncoder
from mark1.model.mark1 import Mark1
from mark1.model.video_qa import VideoQAModel
from mark1.video import DECODERS


def bench_infer(
    result: BenchResult,
    cfg: Config,
    encoder: VideoEncoder,
    model: VideoQAModel,
    work: Path,
    clip: tuple[int, int, float] = INFER_CLIP,
    backends: tuple[str, ...] = tuple(DECODERS),
    repeat: int = 2,
) -> None:
    """Median seconds per step over `repeat` passes (after one warm-up), for each decode backend."""
    path = write_bench_clips(work / "infer", 1, clip)[0]
    spec = CacheSpec.for_encoder(encoder.describe())
    reset_peak(encoder.device)
    steps = {}
    for backend in backends:
        one_pass = Mark1(encoder, model, spec, with_flags(cfg, {"answer.decode_backend": backend}))
        runs = [one_pass.answer(path, QUESTION, CHOICES).timings_s for _ in range(repeat + 1)][1:]
        steps[backend] = {step: float(np.median([r[step] for r in runs])) for step in runs[0]}
    for backend, seconds in steps.items():
        result.add("infer", f"decode {clip[1]}p ({backend})", seconds["decode"], "s")
    first = steps[backends[0]]
    result.add("infer", "encode", first["encode"], "s")
    result.add("infer", "answer (4 choices)", first["answer"], "s")
    result.add("infer", f"one question end to end ({backends[0]})", sum(first.values()), "s")
    add_peak(result, "infer", encoder.device)
