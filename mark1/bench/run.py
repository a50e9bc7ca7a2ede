"""Run the asked benchmark stages in one process, on one device, and collect their figures."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from mark1.bench.answer import bench_answer
from mark1.bench.cache import bench_cache
from mark1.bench.decode import bench_decode
from mark1.bench.extract import bench_extract
from mark1.bench.infer import bench_infer
from mark1.bench.measure import BenchResult, machine_name
from mark1.bench.precision import bench_precision
from mark1.bench.train import bench_train
from mark1.bench.workload import BENCH_CLIP, FULL_LLM, INFER_CLIP, build_backbones
from mark1.config import Config, with_flags
from mark1.devices import pick_device


def run_bench(
    stages: tuple[str, ...],
    cfg: Config,
    size: str = "tiny",
    device: str = "auto",
    num_clips: int = 8,
    memory_gb: float | None = None,
    clip: tuple[int, int, float] | None = None,
    full_llm: str = FULL_LLM,
) -> BenchResult:
    """Run the asked stages; extract runs whenever train needs its cache. `memory_gb` caps this process's
    GPU memory (15 emulates a 16 GB T4): a stage that does not fit is reported, and the run stops there.
    `clip` (width, height, seconds) replaces the written clips' real sizes (720p; 1440p for infer)."""
    dev = pick_device(device)
    cfg = with_flags(
        cfg,
        {
            "extract.device": str(dev),
            "extract.batch_size": min(cfg.extract.batch_size, num_clips),
            "train.device_map": f"projector={dev},llm={dev}",
        },
    )
    measured = full_llm if size == "full" else cfg.llm.name
    result = BenchResult(machine_name(dev), size, f"{measured} ({cfg.llm.quantization})")
    if memory_gb is not None and dev.type == "cuda":
        total = torch.cuda.get_device_properties(dev).total_memory / 1e9
        torch.cuda.set_per_process_memory_fraction(min(1.0, memory_gb / total), dev)
    stage = "decode"
    try:
        with tempfile.TemporaryDirectory(prefix="mark1-bench-") as tmp:
            work = Path(tmp)
            if "decode" in stages:  # needs no backbones: the full model's crop unless the config is tiny
                bench_decode(result, cfg.video.num_frames, 256 if size == "full" else 64, work)
            if stages == ("decode",):
                return result
            stage = "load"
            cfg, encoder, model = build_backbones(cfg, size, dev, full_llm)
            if {"extract", "train"} & set(stages):
                stage = "extract"
                cache_dir = bench_extract(result, cfg, encoder, work, num_clips, clip or BENCH_CLIP)
            runs = {
                "precision": lambda: bench_precision(result, encoder, work, clip or BENCH_CLIP),
                "cache": lambda: bench_cache(result, encoder.describe(), work),
                "train": lambda: bench_train(
                    result, cfg, encoder, model, cache_dir, work / "videos", memory_gb
                ),
                "answer": lambda: bench_answer(result, model, encoder.grid),
                "infer": lambda: bench_infer(result, cfg, encoder, model, work, clip or INFER_CLIP),
            }
            for stage, run in runs.items():
                if stage in stages:
                    run()
    except torch.cuda.OutOfMemoryError:
        budget = memory_gb or torch.cuda.get_device_properties(dev).total_memory / 1e9
        result.add(stage, "out of GPU memory within this budget: the run stopped here", budget, "GB")
        stages = (*stages, stage)
    result.rows = [r for r in result.rows if r["stage"] in stages]
    return result
