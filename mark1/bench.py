"""`mark1 bench`: measure each stage on this machine, side by side in one run, and report ratios.

`--size tiny` uses the tiny backbones; `--size full` builds V-JEPA2 ViT-g and Qwen3-0.6B from their
published configs with random weights (nothing is downloaded), so a job can be sized before fetching weights.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM, VJEPA2Config, VJEPA2Model

from mark1.annotations import QARecord
from mark1.backbones import build_tiny_tokenizer, load_encoder, load_llm, load_tokenizer
from mark1.cache import FeatureCache
from mark1.cache_writer import CacheWriter
from mark1.config import Config, load_config
from mark1.data import QADataset, collate
from mark1.encoder import VideoEncoder, pick_device
from mark1.model.connector import VideoQAModel
from mark1.model.projector import Projector
from mark1.stages.extract import extract
from mark1.synthetic import SignClip, write_video
from mark1.video import load_clip

log = logging.getLogger(__name__)
STAGES = ("decode", "extract", "cache", "train", "answer")
DECODE_SIZES = ((1280, 720), (2560, 1440))  # dashcam resolutions; RoadBuddy's clips are mostly 1440p

# Published sizes of the real backbones (facebook/vjepa2-vitg-fpc64-256, Qwen/Qwen3-0.6B).
VITG = dict(
    hidden_size=1408,
    num_hidden_layers=40,
    num_attention_heads=22,
    mlp_ratio=48 / 11,
    crop_size=256,
    frames_per_clip=64,
    pred_num_hidden_layers=1,
)  # the predictor is never run by Mark-1
QWEN3_06B = dict(
    vocab_size=151936,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    tie_word_embeddings=True,
    max_position_embeddings=40960,
)


@dataclass
class BenchResult:
    machine: str
    size: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # {"stage", "figure", "value", "unit"}

    def add(self, stage: str, figure: str, value: float, unit: str) -> None:
        self.rows.append({"stage": stage, "figure": figure, "value": round(float(value), 4), "unit": unit})


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os
    import platform

    return (
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    )


def _timed(fn: Callable[[], Any], device: torch.device, repeat: int = 1) -> float:
    """Seconds per call (median of `repeat`, after one warm-up), synchronising the GPU around each call."""
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def build_backbones(cfg: Config, size: str, device: torch.device) -> tuple[VideoEncoder, VideoQAModel]:
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if size == "full":
        torch.manual_seed(0)
        encoder_model = VJEPA2Model(VJEPA2Config(**VITG)).to(device, dtype).eval()
        llm = Qwen3ForCausalLM(Qwen3Config(**QWEN3_06B)).to(device).eval()
        tokenizer = build_tiny_tokenizer()  # Qwen3's vocabulary is larger: every byte id is valid in it
        cfg.projector = load_config("mark1-vjepa2-qwen3").projector
    else:
        encoder_model = load_encoder(cfg.encoder, device, dtype)
        llm, tokenizer = load_llm(cfg.llm, device), load_tokenizer(cfg.llm)
    encoder = VideoEncoder(encoder_model, cfg.video.num_frames, cfg.video.pool, name=f"bench-{size}")
    projector = Projector(cfg.projector, encoder.grid[-1], llm.config.hidden_size)
    return encoder, VideoQAModel(llm, tokenizer, projector, device)


def bench_decode(
    result: BenchResult,
    num_frames: int,
    crop_size: int,
    work: Path,
    repeat: int = 4,
    sizes: tuple[tuple[int, int], ...] = DECODE_SIZES,
) -> None:
    """Decode + preprocess clips/s per resolution (10 s, 30 fps, a keyframe a second), 1 vs 2 decode workers."""
    from mark1.stages.extract import decode_loader

    for width, height in sizes:
        path = work / f"decode_{height}p.mp4"
        write_video(path, SignClip(path.stem, 30, 10.0, width, height, "Đỏ", "Bên trái", 1.0, 2.5, 0))
        videos = [(f"{i}.mp4", path) for i in range(repeat)]
        rates = {}
        for workers in (1, 2):
            start = time.perf_counter()
            for _ in decode_loader(videos, num_frames, crop_size, workers):
                pass
            rates[workers] = repeat / (time.perf_counter() - start)
            result.add("decode", f"{height}p, {workers} decode worker(s), decord", rates[workers], "clips/s")
        result.add("decode", f"{height}p, 2 workers / 1 worker", rates[2] / rates[1], "ratio")


def write_bench_clips(directory: Path, count: int, size: str) -> list[Path]:
    """Clips to decode: 1280x720 30 fps 10 s for the full size (a dashcam's), small ones for tiny."""
    width, height, seconds = (1280, 720, 10.0) if size == "full" else (320, 180, 4.0)
    paths = []
    for i in range(count):
        path = directory / f"bench_{i:03d}.mp4"
        write_video(path, SignClip(path.stem, 30, seconds, width, height, "Đỏ", "Bên trái", 1.0, 2.5, i))
        paths.append(path)
    return paths


def bench_extract(
    result: BenchResult, cfg: Config, encoder: VideoEncoder, work: Path, num_clips: int
) -> Path:
    videos = work / "videos"
    paths = write_bench_clips(videos, num_clips, result.size)
    device = encoder.device
    start = time.perf_counter()
    clips = [load_clip(p, encoder.num_frames, encoder.crop_size) for p in paths]
    decode = num_clips / (time.perf_counter() - start)
    batch = torch.stack([c.frames for c in clips[: cfg.extract.batch_size]])
    encode = batch.shape[0] / _timed(lambda: encoder(batch), device, repeat=3)
    cache_dir = work / "cache"
    stage = extract(cfg, videos, cache_dir, encoder=encoder)
    whole = stage.num_extracted / stage.seconds
    result.add("extract", "decode alone (1 process)", decode, "clips/s")
    result.add("extract", "encoder alone (preloaded frames)", encode, "clips/s")
    result.add("extract", f"whole stage ({cfg.extract.decode_workers} decode workers)", whole, "clips/s")
    result.add("extract", "stage / slower of decode and encode", whole / min(decode, encode), "ratio")
    result.add("extract", "bytes written per clip", FeatureCache(cache_dir).info()["bytes_per_clip"], "bytes")
    peak = _peak_gib(device)
    if peak is not None:
        result.add("extract", "peak GPU memory", peak, "GiB")
    return cache_dir


def bench_cache(
    result: BenchResult, encoder: VideoEncoder, work: Path, num_clips: int = 64, repeat: int = 5
) -> None:
    """Training-loader reads of whole clips at this size's grid versus a raw read of the same shard bytes."""
    cache_dir = work / "store"
    writer = CacheWriter(cache_dir, encoder.spec(), shard_clips=16)
    meta = {
        "duration_s": 10.0,
        "fps": 30.0,
        "num_source_frames": 300,
        "width": 1280,
        "height": 720,
        "frame_times_s": [float(i) for i in range(encoder.num_frames)],
    }
    rng = np.random.default_rng(0)
    for i in range(num_clips):
        writer.add(
            f"clip_{i:04d}.mp4", rng.standard_normal(encoder.grid, dtype=np.float32).astype(np.float16), meta
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
    result.add(
        "cache", f"loader, whole clips {list(encoder.grid)} (page cache)", num_clips / loader, "clips/s"
    )
    result.add("cache", "raw sequential read of the same shards", total / raw / 2**20, "MiB/s")
    result.add("cache", "loader / raw read (same bytes)", raw / loader, "ratio")


def _records(cache: FeatureCache, count: int) -> list[QARecord]:
    choices = ["A. Đỏ", "B. Xanh lá", "C. Xanh dương", "D. Vàng"]
    keys = cache.keys()
    return [
        QARecord(
            f"q{i}",
            keys[i % len(keys)],
            "Biển báo trong video có màu gì?",
            choices,
            i % 4,
            [2.0],
            [],
            i + 1,
            keys[i % len(keys)],
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
) -> None:
    cache = FeatureCache(cache_dir)
    batch_size = cfg.train.batch_size
    dataset = QADataset(_records(cache, batch_size), cache, model.tokenizer, model.num_video_tokens, 0.5)
    batch = collate([dataset[i] for i in range(batch_size)])
    optimizer = torch.optim.AdamW(model.projector.parameters(), lr=1e-5)
    device = model.llm_device
    model.train(True)

    def cached_step() -> None:
        loss = model.loss(collate([dataset[i] for i in range(batch_size)]), 2.0, 10.0).total
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def end_to_end_step() -> None:  # what an epoch costs without the cache: decode and encode every clip
        clips = [
            load_clip(videos / r.key, encoder.num_frames, encoder.crop_size)
            for r in _records(cache, batch_size)
        ]
        batch.features = encoder(torch.stack([c.frames for c in clips])).to("cpu", torch.float16)
        loss = model.loss(batch, 2.0, 10.0).total
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    cached = _timed(cached_step, device, repeat=3)
    end_to_end = _timed(end_to_end_step, device, repeat=2)
    model.train(False)
    result.add("train", f"cached step (batch {batch_size})", cached * 1000, "ms")
    result.add(
        "train", f"end-to-end step (decode + encode + step, batch {batch_size})", end_to_end * 1000, "ms"
    )
    result.add("train", "end to end / cached (epoch cost)", end_to_end / cached, "ratio")
    step = step_flops(model, batch)
    result.add(
        "train",
        "FLOP ratio, end to end / cached",
        (step + batch_size * encoder_flops(encoder)) / step,
        "ratio",
    )
    result.add("train", "cached samples/s", batch_size / cached, "samples/s")
    peak = _peak_gib(device)
    if peak is not None:
        result.add("train", "peak GPU memory", peak, "GiB")


def encoder_flops(encoder: VideoEncoder) -> float:
    """Forward FLOPs of the encoder trunk for one clip: 2 x params x tokens + attention (QK^T and AV)."""
    cfg = encoder.model.config
    tokens = encoder.grid[0] * (cfg.crop_size // cfg.patch_size) ** 2
    params = sum(p.numel() for p in encoder.model.encoder.parameters())
    return 2 * params * tokens + 4 * cfg.num_hidden_layers * tokens**2 * cfg.hidden_size


def step_flops(model: VideoQAModel, batch) -> float:
    """FLOPs of one cached training step: the frozen LLM forward + backward to its inputs (no weight
    gradients: 4 x params x tokens) and the projector forward + backward over the video tokens (6 x)."""
    llm = sum(p.numel() for p in model.llm.parameters())
    projector = sum(p.numel() for p in model.projector.parameters())
    video_tokens = batch.features[0, ..., 0].numel()
    return 4 * llm * batch.input_ids.numel() + 6 * projector * video_tokens * batch.features.shape[0]


def bench_answer(result: BenchResult, model: VideoQAModel, grid: list[int]) -> None:
    """Scoring 4 choices: the prompt's KV cache reused (one batch) versus the prompt re-run per choice."""
    features = torch.randn(grid).half()  # the cost does not depend on the values
    question, choices = "Biển báo trong video có màu gì?", ["A. Đỏ", "B. Xanh lá", "C. Xanh dương", "D. Vàng"]
    device = model.llm_device
    reuse = _timed(lambda: model.answer(features, question, choices, reuse_prompt=True), device, 5)
    rerun = _timed(lambda: model.answer(features, question, choices, reuse_prompt=False), device, 5)
    result.add("answer", "choices/s, shared-prompt KV cache (4 choices)", 4 / reuse, "choices/s")
    result.add("answer", "choices/s, prompt re-run per choice", 4 / rerun, "choices/s")
    result.add("answer", "KV cache / re-run", rerun / reuse, "ratio")


def run_bench(
    stages: tuple[str, ...], cfg: Config, size: str = "tiny", device: str = "auto", num_clips: int = 8
) -> BenchResult:
    """Run the asked stages; extract runs whenever train needs its cache."""
    dev = pick_device(device)
    cfg.extract.device = str(dev)
    cfg.train.device_map = f"projector={dev},llm={dev}"
    cfg.extract.batch_size = min(cfg.extract.batch_size, num_clips)
    result = BenchResult(machine_name(dev), size)
    with tempfile.TemporaryDirectory(prefix="mark1-bench-") as tmp:
        work = Path(tmp)
        if "decode" in stages:  # needs no backbones: the crop is the full model's unless the config is tiny
            bench_decode(result, cfg.video.num_frames, 256 if size == "full" else 64, work)
        if stages == ("decode",):
            return result
        encoder, model = build_backbones(cfg, size, dev)
        if {"extract", "train"} & set(stages):
            cache_dir = bench_extract(result, cfg, encoder, work, num_clips)
        if "cache" in stages:
            bench_cache(result, encoder, work)
        if "train" in stages:
            bench_train(result, cfg, encoder, model, cache_dir, work / "videos")
        if "answer" in stages:
            bench_answer(result, model, encoder.grid)
    result.rows = [r for r in result.rows if r["stage"] in stages]
    return result
