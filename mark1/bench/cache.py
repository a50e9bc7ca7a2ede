"""The training loader's reads of whole clips against a raw read of the same shard bytes."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mark1.bench.measure import BenchResult
from mark1.cache import CacheSpec, FeatureCache
from mark1.cache_writer import CacheWriter
from mark1.encoder import EncoderOutput


def bench_cache(
    result: BenchResult, out: EncoderOutput, work: Path, num_clips: int = 64, repeat: int = 5
) -> None:
    """Clips/s at this size's grid, from the page cache (the cache's own reader and writer)."""
    cache_dir = work / "store"
    writer = CacheWriter(cache_dir, CacheSpec.for_encoder(out), shard_clips=16)
    meta = {
        "duration_s": 10.0,
        "fps": 30.0,
        "num_source_frames": 300,
        "width": 1280,
        "height": 720,
        "frame_times_s": [float(i) for i in range(out.num_frames)],
    }
    rng = np.random.default_rng(0)
    for i in range(num_clips):
        writer.add(
            f"clip_{i:04d}.mp4", rng.standard_normal(out.grid, dtype=np.float32).astype(np.float16), meta
        )
    writer.close()
    cache = FeatureCache(cache_dir)
    shards = sorted((cache_dir / "shards").glob("*.h5"))
    for key in cache:  # warm the page cache
        cache[key]
    start = time.perf_counter()
    for _ in range(repeat):
        for key in cache:
            cache[key]
    loader = (time.perf_counter() - start) / repeat
    start = time.perf_counter()
    for _ in range(repeat):
        total = sum(len(p.read_bytes()) for p in shards)
    raw = (time.perf_counter() - start) / repeat
    result.add("cache", f"loader, whole clips {list(out.grid)} (page cache)", num_clips / loader, "clips/s")
    result.add("cache", "raw sequential read of the same shards", total / raw / 2**20, "MiB/s")
    result.add("cache", "loader / raw read (same bytes)", raw / loader, "ratio")
