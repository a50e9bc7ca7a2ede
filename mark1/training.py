"""The pieces of a training run that a recipe assembles: the optimizer step, the schedule, the epoch order.

`train_step` is the one step of Mark-1: `mark1 train`, `mark1 bench train` and its fp16 check run it;
`step_optimizer` is the one optimizer update, which the tiny LLM's warm-up shares.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mark1.config import TrainConfig
from mark1.files import write_atomic
from mark1.model.spans import SpanWeights

if TYPE_CHECKING:
    from mark1.data import Batch
    from mark1.model.video_qa import LossOutput, VideoQAModel
    from mark1.tracking import Tracker


def step_optimizer(
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    max_grad_norm: float,
    scaler: torch.amp.GradScaler | None = None,
) -> bool:
    """Unscale, clip, step, zero the gradients; False when an fp16 overflow made the scaler skip the step."""
    if scaler is None:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return True
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return not (scaler.is_enabled() and scaler.get_scale() < scale)


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over the first `warmup_fraction` of steps, then cosine to zero."""
    warmup = max(1, round(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass
class Optimization:
    """What an optimizer step changes and a resume restores: AdamW, the LR schedule, the fp16 grad scaler."""

    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler  # enabled on CUDA only (fp16 autocast); a no-op on the CPU
    max_grad_norm: float

    @classmethod
    def build(cls, module: torch.nn.Module, tc: TrainConfig, total_steps: int, on_gpu: bool) -> Optimization:
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(total_steps, tc.warmup_fraction)
        )
        return cls(
            params, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=on_gpu), tc.max_grad_norm
        )

    def step(self) -> bool:
        """One update and one schedule step; False when the scaler skipped it (fp16 overflow)."""
        applied = step_optimizer(self.optimizer, self.params, self.max_grad_norm, self.scaler)
        self.scheduler.step()
        return applied

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


@dataclass
class StepResult:
    loss: LossOutput
    finite: bool  # False: the loss was NaN or inf, nothing was applied
    stepped: bool  # an optimizer step ran (the last micro-batch of an accumulation)
    overflow: bool = False  # the step ran but the fp16 scaler skipped the update


def train_step(
    model: VideoQAModel, batch: Batch, opt: Optimization, tc: TrainConfig, step_now: bool = True
) -> StepResult:
    """Forward, backward and (with `step_now`) the optimizer step; a non-finite loss is never stepped on."""
    out = model.loss(
        batch, tc.lambda_temp, tc.pos_weight, SpanWeights(tc.span_l1, tc.span_giou, tc.span_foreground)
    )
    if not torch.isfinite(out.total):  # skip and count, with the micro-batches gathered so far
        opt.optimizer.zero_grad(set_to_none=True)
        return StepResult(out, finite=False, stepped=False)
    opt.scaler.scale(out.total / tc.grad_accum).backward()
    if not step_now:
        return StepResult(out, finite=True, stepped=False)
    return StepResult(out, finite=True, stepped=True, overflow=not opt.step())


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


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class MetricsLog:
    """runs/NAME/metrics.jsonl: one line per logged step and per evaluation, each also handed to the run's
    tracker (TensorBoard, wandb), so that the curves and the file cannot disagree."""

    def __init__(
        self, path: Path, resume_step: int | None, enabled: bool = True, tracker: Tracker | None = None
    ) -> None:
        self.path, self.enabled, self.tracker = path, enabled, tracker
        if not enabled:
            return
        if resume_step is None:
            path.write_text("")
        elif path.is_file():  # drop lines written after the checkpoint we resume from, and a torn last line
            kept = [line for line in path.read_text().splitlines() if _step_of(line) <= resume_step]
            write_atomic(path, "".join(line + "\n" for line in kept).encode())

    def write(self, **row: Any) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
            if self.tracker is not None:
                self.tracker.log(row)

    def close(self, failed: bool = False) -> None:
        """Flush and close the tracker (a failed or interrupted run says so where the tracker can)."""
        if self.tracker is not None:
            self.tracker.close(failed)
            self.tracker = None


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf  # a line cut by a kill, or blank: dropped
