"""The encoder in fp16 (as extract runs it on a GPU) against fp32, on the same real clip."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import torch
import torch.nn.functional as F

from mark1.bench.measure import BenchResult
from mark1.bench.workload import BENCH_CLIP, write_bench_clips
from mark1.encoder import VideoEncoder
from mark1.video import load_clip


def bench_precision(
    result: BenchResult, encoder: VideoEncoder, work: Path, clip: tuple[int, int, float] = BENCH_CLIP
) -> None:
    """Cosine per token, the largest feature (fp16 overflows at 65,504) and the share of finite values."""
    frames = load_clip(
        write_bench_clips(work / "precision", 1, clip)[0], encoder.num_frames, encoder.crop_size
    )
    features = {}
    for dtype in (torch.float32, torch.float16):
        twin = VideoEncoder(deepcopy(encoder.model).to(dtype), encoder.num_frames, encoder.pool, encoder.name)
        features[dtype] = twin(frames.frames[None]).float()
        del twin  # one extra copy of the encoder at a time
    half, full = features[torch.float16], features[torch.float32]
    cosine = F.cosine_similarity(half, full, dim=-1)
    result.add("precision", "fp16 / fp32 features: lowest cosine per token", cosine.min(), "cosine")
    result.add("precision", "fp16 / fp32 features: mean cosine per token", cosine.mean(), "cosine")
    result.add("precision", "largest |feature| in fp16 (fp16 overflows at 65,504)", half.abs().max(), "value")
    result.add(
        "precision", "share of fp16 features that are finite", torch.isfinite(half).float().mean(), "ratio"
    )
