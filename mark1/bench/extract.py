"""Stage one: decoding alone, the encoder alone and the whole stage (which overlaps them), per backend."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mark1.bench.decode import decode_rate
from mark1.bench.measure import BenchResult, add_peak, reset_peak, timed
from mark1.bench.workload import BENCH_CLIP, write_bench_clips
from mark1.cache import FeatureCache
from mark1.config import Config
from mark1.encoder import VideoEncoder
from mark1.stages.extract import extract
from mark1.video import DECODERS, load_clip


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
    alone on preloaded frames. The stage overlaps decoding and encoding, so it should reach the slower.
    Returns the first backend's cache (the train bench reads it)."""
    videos = work / "videos"
    paths = write_bench_clips(videos, num_clips, clip)
    device, workers = encoder.device, cfg.extract.decode_workers
    first = load_clip(paths[0], encoder.num_frames, encoder.crop_size)
    batch = first.frames[None].expand(cfg.extract.batch_size, *first.frames.shape).contiguous()
    reset_peak(device)
    encode = batch.shape[0] / timed(lambda: encoder(batch), device, repeat=3)
    result.add("extract", f"encoder alone (preloaded frames, batch {batch.shape[0]})", encode, "clips/s")
    listed = [(p.name, p) for p in paths]
    wholes = []
    for backend in backends:
        decode = decode_rate(listed, encoder.num_frames, encoder.crop_size, workers, backend)
        local = dataclasses.replace(cfg.extract, decode_backend=backend, engine="local")
        stage = extract(
            dataclasses.replace(cfg, extract=local), videos, work / f"cache_{backend}", encoder=encoder
        )
        whole = stage.num_extracted / stage.seconds
        wholes.append(whole)
        result.add("extract", f"{backend}: decode alone ({workers} workers)", decode, "clips/s")
        result.add("extract", f"{backend}: whole stage", whole, "clips/s")
        result.add(
            "extract", f"{backend}: stage / slower of decode and encode", whole / min(decode, encode), "ratio"
        )
        busy = stage.encode_seconds / stage.seconds
        result.add("extract", f"{backend}: encoder busy share of the stage", busy, "ratio")
    if cfg.extract.engine == "ray":
        ray_rate = bench_ray_engine(cfg, encoder, videos, work, backends[0])
        result.add(
            "extract", f"ray engine, {backends[0]}: whole stage (with Ray's start-up)", ray_rate, "clips/s"
        )
        result.add("extract", "ray engine / local engine, whole stage", ray_rate / wholes[0], "ratio")
    cache_dir = work / f"cache_{backends[0]}"
    result.add("extract", "bytes written per clip", FeatureCache(cache_dir).info()["bytes_per_clip"], "bytes")
    add_peak(result, "extract", device)
    return cache_dir


def bench_ray_engine(cfg: Config, encoder: VideoEncoder, videos: Path, work: Path, backend: str) -> float:
    """Clips per second of `extract --engine ray` over the same clips, the same encoder's weights written for
    its actors to load (a benchmark's encoder may exist only in memory)."""
    encoder.model.save_pretrained(work / "encoder")
    ray_extract = dataclasses.replace(cfg.extract, decode_backend=backend)
    run_cfg = dataclasses.replace(cfg, encoder=str(work / "encoder"), extract=ray_extract)
    stage = extract(run_cfg, videos, work / "cache_ray")
    return stage.num_extracted / stage.seconds
