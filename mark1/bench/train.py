"""Stage two: a cached training step against the same step after decoding and encoding its clips, its FLOP
ratio, its throughput against the device's matmul peak; on a GPU, memory, the largest batch, fp16 steps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from mark1.annotations import QARecord
from mark1.bench.measure import (
    BenchResult,
    add_peak,
    counted_flops,
    largest_batch,
    matmul_peak_flops,
    reset_peak,
    timed,
)
from mark1.bench.workload import CHOICES, QUESTION
from mark1.cache import FeatureCache
from mark1.config import Config
from mark1.data import Batch, QADataset, collate
from mark1.encoder import VideoEncoder
from mark1.model.video_qa import VideoQAModel
from mark1.training import Optimization, train_step
from mark1.video import load_clip


def bench_records(cache: FeatureCache, count: int) -> list[QARecord]:
    """`count` 4-choice questions over the cache's clips, each with a support frame at 2 s."""
    keys = cache.keys()
    return [
        QARecord(
            f"q{i}", keys[i % len(keys)], QUESTION, CHOICES, i % 4, [2.0], [], i + 1, keys[i % len(keys)]
        )
        for i in range(count)
    ]


def bench_train(
    result: BenchResult,
    cfg: Config,
    encoder: VideoEncoder,
    model: VideoQAModel,
    cache_dir: Path,
    videos: Path,
    memory_gb: float | None = None,
) -> None:
    """`mark1 train`'s own step (`train_step`, the config's loss weights), cached and end to end."""
    tc = dataclasses.replace(cfg.train, grad_accum=1)
    cache = FeatureCache(cache_dir)
    records = bench_records(cache, 2 * tc.batch_size)
    dataset = QADataset(
        records, cache, model.tokenizer, model.num_video_tokens, tc.saliency_radius_s, model.budget
    )
    device = model.llm.device
    opt = Optimization.build(model.projector, tc, total_steps=1000, on_gpu=device.type == "cuda")
    model.train(True)

    def batch_of(size: int) -> Batch:
        return collate([dataset[i % len(dataset)] for i in range(size)], model.llm.pad_id)

    def cached_step(size: int = tc.batch_size) -> None:
        train_step(model, batch_of(size), opt, tc)

    def end_to_end_step() -> None:  # decode and encode every clip of the batch, then the same step
        batch = batch_of(tc.batch_size)
        clips = [
            load_clip(videos / r.key, encoder.num_frames, encoder.crop_size) for r in records[: tc.batch_size]
        ]
        batch.features = encoder(torch.stack([c.frames for c in clips])).to("cpu", torch.float16)
        train_step(model, batch, opt, tc)

    reset_peak(device)
    cached = timed(cached_step, device, repeat=3)
    peaks = {tc.batch_size: add_peak(result, "train", device, f"peak GPU memory, batch {tc.batch_size}")}
    end_to_end = timed(end_to_end_step, device, repeat=2)
    result.add("train", f"cached step (batch {tc.batch_size})", cached * 1000, "ms")
    result.add("train", "end-to-end step (decode + encode + the same step)", end_to_end * 1000, "ms")
    result.add("train", "end to end / cached (an epoch's cost)", end_to_end / cached, "ratio")
    flops = counted_flops(cached_step)
    one_clip = load_clip(videos / records[0].key, encoder.num_frames, encoder.crop_size).frames[None]
    e2e_flops = flops + tc.batch_size * counted_flops(lambda: encoder(one_clip))
    result.add("train", "FLOP ratio, end to end / cached", e2e_flops / flops, "ratio")
    result.add("train", "cached samples/s", tc.batch_size / cached, "samples/s")
    peak = matmul_peak_flops(device)
    result.add("train", "cached step, achieved", flops / cached / 1e12, "TFLOP/s")
    share = f"share of this device's matmul peak ({peak / 1e12:.2f} TFLOP/s)"
    result.add("train", share, flops / cached / peak, "ratio")
    if device.type == "cuda":  # memory grows linearly with the batch: two sizes give the largest that fits
        reset_peak(device)
        cached_step(2 * tc.batch_size)
        peaks[2 * tc.batch_size] = add_peak(
            result, "train", device, f"peak GPU memory, batch {2 * tc.batch_size}"
        )
        budget = memory_gb or torch.cuda.get_device_properties(device).total_memory / 1e9
        result.add("train", f"largest batch within {budget:.1f} GB", largest_batch(peaks, budget), "samples")
        finite = fp16_steps(model, batch_of, cfg)
        result.add("train", "fp16 steps with a finite loss", finite, "of 200")
    model.train(False)


def fp16_steps(model: VideoQAModel, batch_of, cfg: Config, steps: int = 200) -> int:
    """How many of `steps` training steps under fp16 autocast with a GradScaler (as `mark1 train` runs on a
    GPU) give a finite loss."""
    tc = dataclasses.replace(cfg.train, grad_accum=1)
    opt = Optimization.build(model.projector, tc, steps, on_gpu=True)
    return sum(train_step(model, batch_of(tc.batch_size), opt, tc).finite for _ in range(steps))
