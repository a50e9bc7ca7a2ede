"""Decoding alone: clips/s per clip kind and backend, with 1 and 2 decode workers."""

from __future__ import annotations

import time
from pathlib import Path

from mark1.bench.measure import BenchResult
from mark1.bench.workload import write_bench_clips
from mark1.video import DECODERS
from mark1.video_loader import decode_loader

# (width, height, frames between keyframes) of the 10 s 30 fps clips: dashcam resolutions (RoadBuddy's
# clips are mostly 1440p) with a keyframe a second, and 720p with short GOPs.
DECODE_CLIPS = ((1280, 720, 30), (1280, 720, 10), (2560, 1440, 30))


def decode_rate(
    videos: list[tuple[str, Path]], num_frames: int, crop_size: int, workers: int, backend: str
) -> float:
    """Clips/s of decode + sample + preprocess through stage one's own loader."""
    start = time.perf_counter()
    for _ in decode_loader(videos, num_frames, crop_size, workers, backend):
        pass
    return len(videos) / (time.perf_counter() - start)


def bench_decode(
    result: BenchResult,
    num_frames: int,
    crop_size: int,
    work: Path,
    repeat: int = 4,
    clips: tuple[tuple[int, int, int], ...] = DECODE_CLIPS,
    backends: tuple[str, ...] = tuple(DECODERS),
) -> None:
    """Clips/s per clip kind and backend with 1 and 2 workers, and the ratios that compare them."""
    for width, height, gop in clips:
        path = write_bench_clips(work / f"decode_{height}p_gop{gop}", 1, (width, height, 10.0), gop)[0]
        videos = [(f"{i}.mp4", path) for i in range(repeat)]
        kind, best = f"{height}p gop {gop}", {}
        for backend in backends:
            rates = {
                workers: decode_rate(videos, num_frames, crop_size, workers, backend) for workers in (1, 2)
            }
            for workers, rate in rates.items():
                result.add("decode", f"{kind}, {backend}, {workers} worker(s)", rate, "clips/s")
            result.add("decode", f"{kind}, {backend}, 2 workers / 1 worker", rates[2] / rates[1], "ratio")
            best[backend] = max(rates.values())
        for backend in backends[1:]:
            ratio = best[backends[0]] / best[backend]
            result.add("decode", f"{kind}, {backends[0]} / {backend} (best of each)", ratio, "ratio")
