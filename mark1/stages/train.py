"""Stage two: fit the projector on cached features; the encoder is never loaded and no video is decoded.

`train` = `setup` (data, model, optimizer, resume) → `fit` (epochs of `train_step`) with `validate` and
`save` along the way; `Progress` is where a run is, saved in every checkpoint so `--resume` replays exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mark1.annotations import QARecord
from mark1.cache import FeatureCache
from mark1.config import Config, ProjectorConfig, TrainConfig
from mark1.data import QADataset, budget_issues, collate, split_by_video
from mark1.devices import parse_device_map
from mark1.distributed import barrier, init_distributed, mean_over_ranks
from mark1.errors import AnnotationError, CheckpointError, ConfigError, TrainingError
from mark1.files import owned_dir
from mark1.matching import require_valid
from mark1.metrics import summarize
from mark1.model.checkpoint import Checkpoint, save_checkpoint
from mark1.model.scoring import score_records
from mark1.model.video_qa import VideoQAModel
from mark1.tracking import open_tracker, require_tracker
from mark1.training import (
    MetricsLog,
    Optimization,
    StepResult,
    epoch_order,
    rank_batches,
    rng_state,
    set_rng_state,
    train_step,
)

log = logging.getLogger(__name__)
RUN_LOCK = ".lock"
OnStep = Callable[[int, int, float], None]  # (step, total steps, loss)
OnEval = Callable[[int, dict], None]  # (step, validation metrics)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float
    best_accuracy: float | None  # the best validation answer score: accuracy and exact match together
    skipped_steps: int  # non-finite losses or fp16 overflows, skipped rather than applied
    seconds: float


@dataclass
class Progress:
    """Where a run is; saved with every checkpoint."""

    epoch: int = 0
    batch: int = 0  # global batches done in this epoch
    step: int = 0  # optimizer steps done
    skipped: int = 0
    best_accuracy: float | None = None  # answer score (the name kept: checkpoints store it)
    best_score: list[float] | None = None  # [answer score, hit@1, span mIoU] of best/


@dataclass
class Run:
    """What `setup` builds and `fit` works on."""

    cfg: Config
    cache: FeatureCache
    model: VideoQAModel
    dataset: QADataset
    val_records: list[QARecord]
    opt: Optimization
    progress: Progress
    metrics_log: MetricsLog
    out_dir: Path
    rank: int
    world: int
    batches_per_epoch: int
    total_steps: int
    on_step: OnStep | None = None
    on_eval: OnEval | None = None


def train(
    cfg: Config,
    cache_dir: Path,
    annotations: Path,
    out_dir: Path,
    val_annotations: Path | None = None,
    resume: bool = False,
    model: VideoQAModel | None = None,
    on_step: OnStep | None = None,
    on_eval: OnEval | None = None,
) -> TrainResult:
    """Train the projector; writes runs/NAME/{best,last}/ and metrics.jsonl. `--resume` continues from last/."""
    start = time.perf_counter()
    rank, world = init_distributed()
    if cfg.train.batch_size < world:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is the global batch: it needs >= {world}")
    if rank == 0:  # the tracker's package, before any work (only rank 0 writes curves)
        require_tracker(cfg.train.tracker)
    cache = FeatureCache(cache_dir)  # CacheError if missing or damaged
    records = _load_records(cache, annotations, val_annotations, cfg.train)
    # One writer per run directory (rank 0 writes for all), taken before anything looks at what it holds.
    owner = owned_dir(out_dir, "--out", RUN_LOCK, "run", CheckpointError) if rank == 0 else nullcontext()
    with owner:
        run = setup(cfg, cache, records, out_dir, resume, model, rank, world)
        run.on_step, run.on_eval = on_step, on_eval
        try:
            loss = fit(run)
        except BaseException:  # Ctrl-C included: the tracker keeps what was logged, closed as failed
            run.metrics_log.close(failed=True)
            raise
        run.metrics_log.close()
        barrier(world)
    p = run.progress
    return TrainResult(out_dir, p.step, loss, p.best_accuracy, p.skipped, time.perf_counter() - start)


def setup(
    cfg: Config,
    cache: FeatureCache,
    records: tuple[list[QARecord], list[QARecord]],
    out_dir: Path,
    resume: bool,
    model: VideoQAModel | None,
    rank: int = 0,
    world: int = 1,
) -> Run:
    """Model (fresh and seeded, or last/'s projector), dataset, optimizer and progress (restored on resume)."""
    tc = cfg.train
    train_records, val_records = records
    last = _resume_from(out_dir / "last", cache, resume, tc.seed)
    projector = last.projector() if last is not None else None
    if model is None:  # tests pass a tiny one in
        model = VideoQAModel.load(cfg, parse_device_map(tc.device_map), projector, cache.spec.grid[-1])
    elif projector is not None:
        model.projector.load_state_dict(projector.state_dict())
    if last is not None:
        last.check_llm(model.llm)
    model.projector.check_grid(cache.spec.grid, f"cache {cache.path}")
    issues = budget_issues(val_records, model.tokenizer, model.num_video_tokens, model.budget)
    if errors := [i for i in issues if i.level == "error"]:  # now, not when the first validation comes
        raise AnnotationError(f"validation question {errors[0]} ({len(errors)} in all)")
    _warn_crowded_spans(train_records, model.projector.cfg)
    if world > 1:
        model.distribute()
    size = model.projector.num_parameters() / 1e6
    log.info(
        "train %d questions, val %d; projector %.2f M parameters", len(train_records), len(val_records), size
    )
    dataset = QADataset(
        train_records, cache, model.tokenizer, model.num_video_tokens, tc.saliency_radius_s, model.budget
    )
    batches_per_epoch = math.ceil(len(dataset) / tc.batch_size)
    total_steps = math.ceil(batches_per_epoch / tc.grad_accum) * tc.epochs
    opt = Optimization.build(model.projector, tc, total_steps, on_gpu=model.llm.device.type == "cuda")
    progress = _restore(last, opt, total_steps) if last is not None else Progress()
    out_dir.mkdir(parents=True, exist_ok=True)
    resume_step = progress.step if last else None
    tracker = open_tracker(cfg, out_dir, resume_step) if rank == 0 else None
    metrics_log = MetricsLog(out_dir / "metrics.jsonl", resume_step, rank == 0, tracker)
    parts = (cfg, cache, model, dataset, val_records, opt, progress, metrics_log, out_dir, rank, world)
    return Run(*parts, batches_per_epoch, total_steps)


def _warn_crowded_spans(records: list[QARecord], cfg: ProjectorConfig) -> None:
    crowded = [r for r in records if len(r.spans) > cfg.num_temporal_queries]
    if cfg.span_head and crowded:
        log.warning(
            "%d question(s) have more spans than the span head's %d windows (e.g. row %d, id %s): the extra "
            "spans are not learned; raise projector.num_temporal_queries",
            len(crowded),
            cfg.num_temporal_queries,
            crowded[0].row,
            crowded[0].id,
        )


def _load_records(
    cache: FeatureCache, annotations: Path, val_annotations: Path | None, tc: TrainConfig
) -> tuple[list[QARecord], list[QARecord]]:
    """Validated training and validation questions (every video in the cache, every answer given)."""
    records = require_valid(annotations, cache, for_training=True)
    if val_annotations is not None:
        return records, require_valid(val_annotations, cache, for_training=True)
    return split_by_video(records, tc.val_fraction, tc.seed)


def _resume_from(last_dir: Path, cache: FeatureCache, resume: bool, seed: int) -> Checkpoint | None:
    """last/ to resume from, checked against the cache; None for a fresh, seeded run."""
    if resume:
        last = Checkpoint.open(last_dir, hub=False)  # a run continues in a local directory only
        last.check_cache(cache.spec)
        return last
    if last_dir.exists() or last_dir.with_name("last.old").exists():
        raise ConfigError(
            f"{last_dir.parent} already holds a run; pass --resume to continue it, or choose another --out"
        )
    torch.manual_seed(seed)
    return None


def _restore(last: Checkpoint, opt: Optimization, total_steps: int) -> Progress:
    """Optimizer, schedule, scaler and RNG as last/ left them; where the run stood."""
    state = last.training_state()
    opt.load_state_dict(state)
    set_rng_state(state["rng"])
    progress = Progress(**state["progress"])
    if progress.step > total_steps:
        raise CheckpointError(
            f"{last.path} is at step {progress.step}, past this config's {total_steps} steps"
        )
    return progress


def fit(run: Run) -> float:
    """Epochs of `train_step` from where `run.progress` stands; validates and saves last/ after each."""
    p, tc = run.progress, run.cfg.train
    loss = float("nan")
    run.model.train(True)
    while p.epoch < tc.epochs:
        first_batch, nonfinite = p.batch, 0
        for batch in _epoch_loader(run):
            p.batch += 1
            step_now = p.batch % tc.grad_accum == 0 or p.batch >= run.batches_per_epoch
            result = train_step(run.model, batch, run.opt, tc, step_now)
            if not result.finite:  # skipped and counted; never stepped on
                p.skipped += 1
                nonfinite += 1
            elif result.stepped:
                p.step += 1
                p.skipped += result.overflow
                loss = _after_step(run, result)
        _check_learning(run, nonfinite, run.batches_per_epoch - first_batch)
        p.epoch += 1
        p.batch = 0
        metrics = validate(run)
        _keep_best(run, metrics, always=not run.val_records)
        save(run, run.out_dir / "last", metrics)
    run.model.train(False)
    return loss


def _check_learning(run: Run, skipped: int, batches: int) -> None:
    """Stop, before saving, when most of an epoch's batches gave a non-finite loss: such a run learns
    nothing, and best/ would look trained."""
    if batches and skipped * 2 > batches:
        raise TrainingError(
            f"{skipped} of {batches} batches in epoch {run.progress.epoch + 1} gave a NaN or infinite loss; "
            f"{run.out_dir} keeps its last good save. Check the features with `mark1 cache verify "
            f"{run.cache.path}`, or lower train.lr"
        )


def _epoch_loader(run: Run) -> DataLoader:
    """This rank's batches of the epoch, in the epoch's seeded order, from where the epoch stands."""
    tc, p = run.cfg.train, run.progress
    order = epoch_order(len(run.dataset), tc.seed, p.epoch)
    return DataLoader(
        run.dataset,
        batch_sampler=rank_batches(order, tc.batch_size, p.batch, run.rank, run.world),
        num_workers=tc.num_workers,
        collate_fn=partial(collate, pad_id=run.model.llm.pad_id),
        # Its own generator: a DataLoader draws a seed when iterated, which would shift the global RNG
        # (dropout) by one draw on resume.
        generator=torch.Generator().manual_seed(tc.seed),
        pin_memory=run.model.llm.device.type == "cuda",  # batches copy to the GPU without stalling the host
    )


def _after_step(run: Run, result: StepResult) -> float:
    """Progress callback, metrics.jsonl, and the every-N-steps validation and save."""
    p, tc = run.progress, run.cfg.train
    loss = mean_over_ranks(result.loss.total, run.world)
    if run.on_step is not None:
        run.on_step(p.step, run.total_steps, loss)
    if p.step % tc.log_every == 0 or p.step == run.total_steps:
        run.metrics_log.write(
            kind="train",
            step=p.step,
            epoch=p.epoch,
            loss=loss,
            answer_loss=mean_over_ranks(result.loss.answer, run.world),
            saliency_loss=mean_over_ranks(result.loss.saliency, run.world),
            span_loss=mean_over_ranks(result.loss.span, run.world),
            lr=run.opt.scheduler.get_last_lr()[0],
            skipped=p.skipped,
        )
    if tc.eval_every and p.step % tc.eval_every == 0:
        _keep_best(run, validate(run))
    if tc.save_every and p.step % tc.save_every == 0:
        save(run, run.out_dir / "last")
    return loss


def validate(run: Run) -> dict:
    """Validation metrics (rank 0, when there is a validation set), logged to metrics.jsonl."""
    if not run.val_records or run.rank > 0:
        return {}
    p = run.progress
    rows = score_records(run.model, run.cache, run.val_records, max_new_tokens=run.cfg.answer.max_new_tokens)
    metrics = summarize(rows)
    run.metrics_log.write(kind="eval", step=p.step, epoch=p.epoch, **metrics)
    if run.on_eval is not None:
        run.on_eval(p.step, metrics)
    return metrics


def save(run: Run, directory: Path, metrics: dict | None = None) -> None:
    """A checkpoint with the training state; one writer: rank 0 holds the same weights as every rank."""
    if run.rank > 0:
        return
    state = {**run.opt.state_dict(), "rng": rng_state(), "progress": dataclasses.asdict(run.progress)}
    save_checkpoint(directory, run.model, run.cfg, run.cache.spec, state, metrics)


def _keep_best(run: Run, metrics: dict, always: bool = False) -> None:
    """best/ holds the best validation (answer score: accuracy and exact match together, then hit@1, then
    the span head's mIoU) so far, the later one on ties; without a validation set, the latest epoch."""
    p = run.progress
    score = [metrics.get(k, 0.0) for k in ("answer_score", "hit@1_1s", "span_mIoU")]
    if always or (metrics and (p.best_score is None or score >= p.best_score)):
        p.best_score, p.best_accuracy = score, metrics.get("answer_score")
        save(run, run.out_dir / "best", metrics)
