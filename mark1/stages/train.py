"""Stage two: fit the projector on cached features; the encoder is never loaded and no video is decoded."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mark1.annotations import QARecord, require_valid
from mark1.cache import FeatureCache
from mark1.checkpoint import check_cache, load_projector, load_state, read_meta, save_checkpoint
from mark1.config import Config, TrainConfig
from mark1.data import QADataset, collate
from mark1.distributed import barrier, init_distributed, local_device, mean_over_ranks
from mark1.errors import CheckpointError, ConfigError
from mark1.metrics import summarize
from mark1.model.connector import VideoQAModel
from mark1.model.projector import Projector
from mark1.stages.evaluate import score_records

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float
    best_accuracy: float | None
    skipped_steps: int  # non-finite losses or fp16 overflows, skipped rather than applied
    seconds: float


def split_by_video(
    records: list[QARecord], fraction: float, seed: int
) -> tuple[list[QARecord], list[QARecord]]:
    """Hold out whole videos, so no clip is seen by both splits."""
    videos = sorted({r.key for r in records})
    if fraction <= 0 or len(videos) < 2:
        return records, []
    random.Random(seed).shuffle(videos)
    held = set(videos[: max(1, round(fraction * len(videos)))])
    return [r for r in records if r.key not in held], [r for r in records if r.key in held]


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over the first `warmup_fraction` of steps, then cosine to zero."""
    warmup = max(1, round(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of epoch `epoch`: a pure function of (seed, epoch), so a resumed run replays it."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(size, generator=generator).tolist()


def rank_batches(order: list[int], batch_size: int, skip: int, rank: int, world: int) -> list[list[int]]:
    """This rank's part of each global batch of `order`, after the first `skip` global batches.

    Every rank gets the same number of batches, each non-empty (a short last batch borrows from the start
    of the order, as DistributedSampler pads), so no rank waits on a gradient all-reduce that never comes.
    """
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)][skip:]
    if world > 1 and batches and len(batches[-1]) < world:
        batches[-1] = batches[-1] + order[: world - len(batches[-1])]
    return [batch[rank::world] for batch in batches]


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class MetricsLog:
    """runs/NAME/metrics.jsonl: one line per logged step and per evaluation."""

    def __init__(self, path: Path, resume_step: int | None, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        if resume_step is None:
            path.write_text("")
        elif path.is_file():  # drop lines written after the checkpoint we resume from
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, **row: Any) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _load_records(
    cache: FeatureCache, annotations: Path, val_annotations: Path | None, tc: TrainConfig
) -> tuple[list[QARecord], list[QARecord]]:
    """Validated training and validation questions (every video in the cache, every answer given)."""
    records = require_valid(annotations, cache, need_answers=True)
    if val_annotations is not None:
        return records, require_valid(val_annotations, cache, need_answers=True)
    return split_by_video(records, tc.val_fraction, tc.seed)


def _start_from(
    last_dir: Path, cache: FeatureCache, resume: bool, seed: int
) -> tuple[Projector | None, dict[str, Any] | None]:
    """The projector and training state to resume from, or (None, None) for a fresh, seeded run."""
    if resume:
        check_cache(read_meta(last_dir), cache.spec, last_dir)
        return load_projector(last_dir), load_state(last_dir)
    if last_dir.exists() or last_dir.with_name("last.old").exists():
        raise ConfigError(
            f"{last_dir.parent} already holds a run; pass --resume to continue it, or choose another --out"
        )
    torch.manual_seed(seed)
    return None, None


def train(
    cfg: Config,
    cache_dir: Path,
    annotations: Path,
    out_dir: Path,
    val_annotations: Path | None = None,
    resume: bool = False,
    model: VideoQAModel | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    on_eval: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train the projector; writes runs/NAME/{best,last}/ and metrics.jsonl. `--resume` continues from last/."""
    start_time = time.perf_counter()
    tc = cfg.train
    rank, world = init_distributed()
    if tc.batch_size < world:
        raise ConfigError(
            f"train.batch_size {tc.batch_size} is the global batch: it needs >= {world} (one per rank)"
        )
    cache = FeatureCache(cache_dir)  # CacheError if missing or damaged
    train_records, val_records = _load_records(cache, annotations, val_annotations, tc)
    last_dir, best_dir = out_dir / "last", out_dir / "best"
    projector, state = _start_from(last_dir, cache, resume, tc.seed)
    if model is None:
        device = local_device(tc.device_map)  # under torchrun, auto = this rank's own GPU for both
        device_map = f"projector={device},llm={device}" if device != tc.device_map else None
        model = VideoQAModel.load(cfg, cache.spec.grid[-1], projector=projector, device_map=device_map)
    elif projector is not None:
        model.projector.load_state_dict(projector.state_dict())
    if world > 1:
        model.distribute()
    log.info(
        "train %d questions, val %d; projector %.2f M parameters",
        len(train_records),
        len(val_records),
        model.projector.num_parameters() / 1e6,
    )

    dataset = QADataset(train_records, cache, model.tokenizer, model.num_video_tokens, tc.saliency_radius_s)
    batches_per_epoch = math.ceil(len(dataset) / tc.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / tc.grad_accum)
    total_steps = steps_per_epoch * tc.epochs
    params = [p for p in model.projector.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, tc.warmup_fraction))
    on_gpu = model.llm_device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=on_gpu)
    progress = {"epoch": 0, "batch": 0, "step": 0, "skipped": 0, "best_accuracy": None, "best_score": None}
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        progress = state["progress"]
        if progress["step"] > total_steps:
            raise CheckpointError(
                f"{last_dir} is at step {progress['step']}, past this config's {total_steps} steps"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_log = MetricsLog(
        out_dir / "metrics.jsonl", progress["step"] if state is not None else None, rank == 0
    )

    def save(directory: Path, metrics: dict | None = None) -> None:
        if rank > 0:  # one writer: rank 0 holds the same weights as every rank
            return
        training_state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": _rng_state(),
            "progress": dict(progress),
        }
        save_checkpoint(directory, model.projector, cfg, cache.spec, training_state, metrics)

    def validate() -> dict:
        if not val_records or rank > 0:
            return {}
        metrics = summarize(score_records(model, cache, val_records))
        metrics_log.write(kind="eval", step=progress["step"], epoch=progress["epoch"], **metrics)
        if on_eval is not None:
            on_eval(progress["step"], metrics)
        return metrics

    model.train(True)
    loss_value = float("nan")
    while progress["epoch"] < tc.epochs:
        order = epoch_order(len(dataset), tc.seed, progress["epoch"])
        # Its own generator: a DataLoader draws a seed when iterated, which would shift the global RNG
        # (dropout) by one draw on resume.
        loader = DataLoader(
            dataset,
            batch_sampler=rank_batches(order, tc.batch_size, progress["batch"], rank, world),
            num_workers=tc.num_workers,
            collate_fn=partial(collate, pad_id=model.tokenizer.pad_token_id or 0),
            generator=torch.Generator().manual_seed(tc.seed),
            pin_memory=on_gpu,  # on CUDA: batches copy to the GPU without stalling the host
        )
        for batch in loader:
            out = model.loss(batch, tc.lambda_temp, tc.pos_weight)
            progress["batch"] += 1
            if not torch.isfinite(out.total):  # skip and count; never step on a NaN
                progress["skipped"] += 1
                optimizer.zero_grad(set_to_none=True)
                continue
            scaler.scale(out.total / tc.grad_accum).backward()
            if progress["batch"] % tc.grad_accum and progress["batch"] < batches_per_epoch:
                continue
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm)
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            if on_gpu and scaler.get_scale() < scale:  # fp16 overflow: the scaler skipped this step
                progress["skipped"] += 1
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            progress["step"] += 1
            loss_value = mean_over_ranks(out.total, world)
            step = progress["step"]
            if on_step is not None:
                on_step(step, total_steps, loss_value)
            if step % tc.log_every == 0 or step == total_steps:
                metrics_log.write(
                    kind="train",
                    step=step,
                    epoch=progress["epoch"],
                    loss=loss_value,
                    answer_loss=mean_over_ranks(out.answer, world),
                    saliency_loss=mean_over_ranks(out.saliency, world),
                    lr=scheduler.get_last_lr()[0],
                    skipped=progress["skipped"],
                )
            if tc.eval_every and step % tc.eval_every == 0:
                _keep_best(validate(), progress, save, best_dir)
            if tc.save_every and step % tc.save_every == 0:
                save(last_dir)
        progress["epoch"] += 1
        progress["batch"] = 0
        metrics = validate()
        _keep_best(metrics, progress, save, best_dir, always=not val_records)
        save(last_dir, metrics)
    model.train(False)
    barrier(world)
    return TrainResult(
        out_dir,
        progress["step"],
        loss_value,
        progress["best_accuracy"],
        progress["skipped"],
        time.perf_counter() - start_time,
    )


def _keep_best(
    metrics: dict, progress: dict, save: Callable[..., None], best_dir: Path, always: bool = False
) -> None:
    """best/ holds the best validation (accuracy, then hit@1) so far, the later one on ties; without a
    validation set, the latest epoch."""
    score = [metrics.get("accuracy", 0.0), metrics.get("hit@1_1s", 0.0)]
    if always or (metrics and (progress["best_score"] is None or score >= progress["best_score"])):
        progress["best_score"], progress["best_accuracy"] = score, metrics.get("accuracy")
        save(best_dir, metrics)
