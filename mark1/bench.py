"""`mark1 bench`: measure each stage on this machine, side by side in one run, and report ratios.

`--size tiny` uses the tiny backbones; `--size full` builds V-JEPA2 ViT-g and Qwen3-0.6B from their
published configs with random weights (nothing is downloaded), so a job can be sized before fetching weights.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode
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
from mark1.stages.extract import decode_loader, extract
from mark1.synthetic import SignClip, write_video
from mark1.video import DECODERS, load_clip

log = logging.getLogger(__name__)
STAGES = ("decode", "extract", "precision", "cache", "train", "answer", "infer")
# (width, height, frames between keyframes) of the 10 s 30 fps clips the decode bench writes: dashcam
# resolutions (RoadBuddy's clips are mostly 1440p) with a keyframe a second, and 720p with short GOPs.
DECODE_CLIPS = ((1280, 720, 30), (1280, 720, 10), (2560, 1440, 30))
QUESTION, CHOICES = "Biển báo trong video có màu gì?", ["A. Đỏ", "B. Xanh lá", "C. Xanh dương", "D. Vàng"]

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
        self.rows.append({"stage": stage, "figure": figure, "value": round(float(value), 6), "unit": unit})


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


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _add_peak(result: BenchResult, stage: str, device: torch.device, what: str = "peak GPU memory") -> float:
    """Peak memory allocated since the last reset (CUDA only: torch does not track CPU allocations)."""
    if device.type != "cuda":
        return 0.0
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    result.add(stage, what, peak, "GiB")
    return peak


def matmul_peak_flops(device: torch.device) -> float:
    """FLOP/s of a large square matmul in the dtype training computes in (fp16 on CUDA, fp32 on CPU): the
    measured ceiling that a training step's throughput is compared with."""
    n, dtype = (8192, torch.float16) if device.type == "cuda" else (2048, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / _timed(lambda: a @ b, device, repeat=5)


def largest_batch(peaks_gib: dict[int, float], budget_gib: float) -> int:
    """The largest batch whose peak memory fits `budget_gib`, from peaks measured at two batch sizes
    (memory grows linearly with the batch: fixed weights and optimizer state, activations per sample)."""
    (b1, m1), (b2, m2) = sorted(peaks_gib.items())[:2]
    per_sample = (m2 - m1) / (b2 - b1)
    fixed = m1 - per_sample * b1
    if per_sample <= 0:
        return b2
    return max(0, int((budget_gib - fixed) / per_sample))


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
    clips: tuple[tuple[int, int, int], ...] = DECODE_CLIPS,
    backends: tuple[str, ...] = tuple(DECODERS),
) -> None:
    """Decode + sample + preprocess clips/s per clip kind and backend, with 1 and 2 decode workers, and the
    ratios that compare them."""
    for width, height, gop in clips:
        path = write_bench_clips(work / f"decode_{height}p_gop{gop}", 1, (width, height, 10.0), gop)[0]
        videos = [(f"{i}.mp4", path) for i in range(repeat)]
        kind, best = f"{height}p gop {gop}", {}
        for backend in backends:
            rates = {}
            for workers in (1, 2):
                start = time.perf_counter()
                for _ in decode_loader(videos, num_frames, crop_size, workers, backend):
                    pass
                rates[workers] = repeat / (time.perf_counter() - start)
                result.add("decode", f"{kind}, {backend}, {workers} worker(s)", rates[workers], "clips/s")
            result.add("decode", f"{kind}, {backend}, 2 workers / 1 worker", rates[2] / rates[1], "ratio")
            best[backend] = max(rates.values())
        for backend in backends[1:]:
            result.add(
                "decode",
                f"{kind}, {backends[0]} / {backend} (best of each)",
                best[backends[0]] / best[backend],
                "ratio",
            )


BENCH_CLIP = (1280, 720, 10.0)  # what the extract and train benches write: a dashcam's 720p, 30 fps, 10 s
INFER_CLIP = (2560, 1440, 10.0)  # RoadBuddy's clips: 1440p, 30 fps, 5-14 s


def write_bench_clips(
    directory: Path,
    count: int,
    clip: tuple[int, int, float] = BENCH_CLIP,
    keyframe_every: int | None = None,
) -> list[Path]:
    """`count` 30 fps clips of (width, height, seconds), a keyframe a second unless `keyframe_every` frames."""
    width, height, seconds = clip
    paths = []
    for i in range(count):
        path = directory / f"bench_{i:03d}.mp4"
        sign = SignClip(path.stem, 30, seconds, width, height, "Đỏ", "Bên trái", 1.0, 2.5, i)
        write_video(path, sign, keyframe_every)
        paths.append(path)
    return paths


def bench_extract(
    result: BenchResult,
    cfg: Config,
    encoder: VideoEncoder,
    work: Path,
    num_clips: int,
    clip: tuple[int, int, float] = BENCH_CLIP,
    backends: tuple[str, ...] = tuple(DECODERS),
) -> Path:
    """Per decode backend: decoding alone and the whole stage, with the same decode workers; the encoder
    alone on preloaded frames. The stage overlaps decoding and encoding, so it should reach the slower."""
    videos = work / "videos"
    paths = write_bench_clips(videos, num_clips, clip)
    device, workers = encoder.device, cfg.extract.decode_workers
    first = load_clip(paths[0], encoder.num_frames, encoder.crop_size)
    batch = first.frames[None].expand(cfg.extract.batch_size, *first.frames.shape).contiguous()
    _reset_peak(device)
    encode = batch.shape[0] / _timed(lambda: encoder(batch), device, repeat=3)
    result.add("extract", f"encoder alone (preloaded frames, batch {batch.shape[0]})", encode, "clips/s")
    listed = [(p.name, p) for p in paths]
    for backend in backends:
        start = time.perf_counter()
        for _ in decode_loader(listed, encoder.num_frames, encoder.crop_size, workers, backend):
            pass
        decode = num_clips / (time.perf_counter() - start)
        cfg.extract.decode_backend = backend
        stage = extract(cfg, videos, work / f"cache_{backend}", encoder=encoder)
        whole = stage.num_extracted / stage.seconds
        result.add("extract", f"{backend}: decode alone ({workers} workers)", decode, "clips/s")
        result.add("extract", f"{backend}: whole stage", whole, "clips/s")
        result.add(
            "extract", f"{backend}: stage / slower of decode and encode", whole / min(decode, encode), "ratio"
        )
        result.add(
            "extract",
            f"{backend}: encoder busy share of the stage",
            stage.encode_seconds / stage.seconds,
            "ratio",
        )
    cache_dir = work / f"cache_{backends[0]}"
    result.add("extract", "bytes written per clip", FeatureCache(cache_dir).info()["bytes_per_clip"], "bytes")
    _add_peak(result, "extract", device)
    return cache_dir


def bench_precision(
    result: BenchResult, encoder: VideoEncoder, work: Path, clip: tuple[int, int, float] = BENCH_CLIP
) -> None:
    """The encoder in fp16 (as extract runs it on a GPU) against fp32, on the same real clip: cosine per
    token, the largest feature (fp16 overflows at 65,504) and the share of finite values."""
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
    keys = cache.keys()
    return [
        QARecord(
            f"q{i}",
            keys[i % len(keys)],
            QUESTION,
            CHOICES,
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
    memory_gib: float | None = None,
) -> None:
    """A cached training step against the same step that first decodes and encodes its clips (what every
    epoch costs without the cache), its FLOP ratio, and its throughput against the device's matmul peak."""
    cache = FeatureCache(cache_dir)
    batch_size = cfg.train.batch_size
    records = _records(cache, 2 * batch_size)
    dataset = QADataset(records, cache, model.tokenizer, model.num_video_tokens, 0.5)
    optimizer = torch.optim.AdamW(model.projector.parameters(), lr=1e-5)
    device = model.llm_device
    model.train(True)

    def step(batch) -> None:
        loss = model.loss(batch, 2.0, 10.0).total
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def cached_step(size: int = batch_size) -> None:
        step(collate([dataset[i] for i in range(size)]))

    def end_to_end_step() -> None:  # decode and encode every clip of the batch, then the same step
        batch = collate([dataset[i] for i in range(batch_size)])
        clips = [
            load_clip(videos / r.key, encoder.num_frames, encoder.crop_size) for r in records[:batch_size]
        ]
        batch.features = encoder(torch.stack([c.frames for c in clips])).to("cpu", torch.float16)
        step(batch)

    _reset_peak(device)
    cached = _timed(cached_step, device, repeat=3)
    peaks = {batch_size: _add_peak(result, "train", device, f"peak GPU memory, batch {batch_size}")}
    end_to_end = _timed(end_to_end_step, device, repeat=2)
    result.add("train", f"cached step (batch {batch_size})", cached * 1000, "ms")
    result.add("train", "end-to-end step (decode + encode + the same step)", end_to_end * 1000, "ms")
    result.add("train", "end to end / cached (an epoch's cost)", end_to_end / cached, "ratio")
    flops = counted_flops(cached_step)
    one_clip = load_clip(videos / records[0].key, encoder.num_frames, encoder.crop_size).frames[None]
    e2e_flops = flops + batch_size * counted_flops(lambda: encoder(one_clip))
    result.add("train", "FLOP ratio, end to end / cached", e2e_flops / flops, "ratio")
    result.add("train", "cached samples/s", batch_size / cached, "samples/s")
    peak = matmul_peak_flops(device)
    result.add("train", "cached step, achieved", flops / cached / 1e12, "TFLOP/s")
    result.add(
        "train",
        f"share of this device's matmul peak ({peak / 1e12:.2f} TFLOP/s)",
        flops / cached / peak,
        "ratio",
    )
    if device.type == "cuda":  # memory grows linearly with the batch: two sizes give the largest that fits
        _reset_peak(device)
        cached_step(2 * batch_size)
        peaks[2 * batch_size] = _add_peak(result, "train", device, f"peak GPU memory, batch {2 * batch_size}")
        budget = memory_gib or torch.cuda.get_device_properties(device).total_memory / 2**30
        result.add("train", f"largest batch within {budget:.1f} GiB", largest_batch(peaks, budget), "samples")
        result.add("train", "fp16 steps with a finite loss", fp16_steps(model, dataset, batch_size), "of 200")
    model.train(False)


def fp16_steps(model: VideoQAModel, dataset: QADataset, batch_size: int, steps: int = 200) -> int:
    """How many of `steps` training steps under fp16 autocast with a GradScaler (as `mark1 train` runs on a
    GPU) give a finite loss."""
    optimizer = torch.optim.AdamW(model.projector.parameters(), lr=5e-5)
    scaler = torch.amp.GradScaler("cuda")
    losses = []
    for step in range(steps):
        rows = [(step * batch_size + i) % len(dataset) for i in range(batch_size)]
        loss = model.loss(collate([dataset[i] for i in rows]), 2.0, 10.0).total
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return int(torch.isfinite(torch.stack(losses)).sum())


def _cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


# torch counts the GPU attention kernels but not the CPU one, which would hide the attention's FLOPs here.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


def counted_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the matmuls, convolutions and attention that `fn` runs, forward and backward, as torch's
    FlopCounterMode counts them from the ops actually dispatched: a frozen weight costs no weight gradient,
    and the LLM's head counts only at the answer positions."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        fn()
    return counter.get_total_flops()


def bench_answer(result: BenchResult, model: VideoQAModel, grid: list[int]) -> None:
    """Scoring 4 choices: the prompt's KV cache reused (one batch) versus the prompt re-run per choice."""
    features = torch.randn(grid).half()  # the cost does not depend on the values
    device = model.llm_device
    reuse = _timed(lambda: model.answer(features, QUESTION, CHOICES, reuse_prompt=True), device, 5)
    rerun = _timed(lambda: model.answer(features, QUESTION, CHOICES, reuse_prompt=False), device, 5)
    result.add("answer", "choices/s, shared-prompt KV cache (4 choices)", 4 / reuse, "choices/s")
    result.add("answer", "choices/s, prompt re-run per choice", 4 / rerun, "choices/s")
    result.add("answer", "KV cache / re-run", rerun / reuse, "ratio")


def bench_infer(
    result: BenchResult,
    encoder: VideoEncoder,
    model: VideoQAModel,
    work: Path,
    clip: tuple[int, int, float] = INFER_CLIP,
    backends: tuple[str, ...] = tuple(DECODERS),
) -> None:
    """`mark1 infer`'s steps on one clip at RoadBuddy's size: seconds to decode (per backend, in this
    process, as infer does), encode and answer 4 choices."""
    path = write_bench_clips(work / "infer", 1, clip)[0]
    height = clip[1]
    cpu = torch.device("cpu")
    decode = {
        backend: _timed(
            lambda b=backend: load_clip(path, encoder.num_frames, encoder.crop_size, backend=b), cpu
        )
        for backend in backends
    }
    clip = load_clip(path, encoder.num_frames, encoder.crop_size)
    _reset_peak(encoder.device)
    encode = _timed(lambda: encoder(clip.frames[None]), encoder.device, repeat=3)
    features = encoder(clip.frames[None])[0].to("cpu", torch.float16)
    answer = _timed(lambda: model.answer(features, QUESTION, CHOICES), model.llm_device, repeat=3)
    for backend, seconds in decode.items():
        result.add("infer", f"decode {height}p ({backend})", seconds, "s")
    result.add("infer", "encode", encode, "s")
    result.add("infer", "answer (4 choices)", answer, "s")
    result.add(
        "infer", f"one question end to end ({backends[0]})", decode[backends[0]] + encode + answer, "s"
    )
    _add_peak(result, "infer", encoder.device)


def run_bench(
    stages: tuple[str, ...],
    cfg: Config,
    size: str = "tiny",
    device: str = "auto",
    num_clips: int = 8,
    memory_gib: float | None = None,
    clip: tuple[int, int, float] | None = None,
) -> BenchResult:
    """Run the asked stages; extract runs whenever train needs its cache. `memory_gib` caps this process's
    GPU memory (15 emulates a 16 GB T4): a stage that does not fit is reported, and the run stops there.
    `clip` (width, height, seconds) replaces the written clips' real sizes (720p; 1440p for infer)."""
    dev = pick_device(device)
    cfg.extract.device = str(dev)
    cfg.train.device_map = f"projector={dev},llm={dev}"
    cfg.extract.batch_size = min(cfg.extract.batch_size, num_clips)
    result = BenchResult(machine_name(dev), size)
    if memory_gib is not None and dev.type == "cuda":
        total = torch.cuda.get_device_properties(dev).total_memory / 2**30
        torch.cuda.set_per_process_memory_fraction(min(1.0, memory_gib / total), dev)
    stage = "decode"
    try:
        with tempfile.TemporaryDirectory(prefix="mark1-bench-") as tmp:
            work = Path(tmp)
            if "decode" in stages:  # needs no backbones: the full model's crop unless the config is tiny
                bench_decode(result, cfg.video.num_frames, 256 if size == "full" else 64, work)
            if stages == ("decode",):
                return result
            stage = "load"
            encoder, model = build_backbones(cfg, size, dev)
            if {"extract", "train"} & set(stages):
                stage = "extract"
                cache_dir = bench_extract(result, cfg, encoder, work, num_clips, clip or BENCH_CLIP)
            runs = {
                "precision": lambda: bench_precision(result, encoder, work, clip or BENCH_CLIP),
                "cache": lambda: bench_cache(result, encoder, work),
                "train": lambda: bench_train(
                    result, cfg, encoder, model, cache_dir, work / "videos", memory_gib
                ),
                "answer": lambda: bench_answer(result, model, encoder.grid),
                "infer": lambda: bench_infer(result, encoder, model, work, clip or INFER_CLIP),
            }
            for stage, run in runs.items():
                if stage in stages:
                    run()
    except torch.cuda.OutOfMemoryError:
        budget = memory_gib or torch.cuda.get_device_properties(dev).total_memory / 2**30
        result.add(stage, "out of GPU memory within this budget: the run stopped here", budget, "GiB")
        stages = (*stages, stage)
    result.rows = [r for r in result.rows if r["stage"] in stages]
    return result
