"""Training curves beside metrics.jsonl: TensorBoard event files (runs/NAME/tensorboard/) or an offline wandb
run (runs/NAME/wandb/), chosen by `train.tracker`.

`MetricsLog` hands every row it writes to the tracker, so the curves and metrics.jsonl hold the same numbers
at the same steps. Only rank 0 opens one, as only rank 0 writes metrics.jsonl.
"""

from __future__ import annotations

import importlib
import uuid
from pathlib import Path
from typing import Any, Protocol

from mark1.config import Config
from mark1.errors import ConfigError
from mark1.files import write_atomic
from mark1.metrics import flat_numbers

TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"  # wandb.init(dir=run_dir) writes here itself
WANDB_ID = "mark1-run-id"  # in WANDB_DIR: the id a resumed session continues
FLUSH_S = 30  # event files are flushed this often, so curves show up while a run trains


class Tracker(Protocol):
    def log(self, row: dict[str, Any]) -> None: ...

    def close(self, failed: bool = False) -> None: ...


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of one metrics.jsonl row as tracker tags, `KIND/KEY` (`train/loss`, `eval/accuracy`), with
    nested maps flattened (`eval/accuracy_by_num_choices/4`); `step` is the x axis, not a curve."""
    kind = row.get("kind", "metrics")
    numbers = flat_numbers({k: v for k, v in row.items() if k not in ("kind", "step")}, sep="/")
    return {f"{kind}/{tag}": float(value) for tag, value in numbers.items()}


def require_tracker(name: str) -> None:
    """Refuse a tracker whose package is missing before any work starts, naming the extra to install."""
    if name == "none":
        return
    try:
        importlib.import_module(name)  # the package itself: torch.utils.tensorboard imports even without it
    except ImportError as err:
        # absent, or installed but broken (then the import's own error says why)
        problem = "is not installed" if err.name == name else f"cannot be imported ({err})"
        raise ConfigError(
            f"train.tracker is {name!r} but the {name} package {problem}: "
            f'pip install -e ".[{name}]", or set train.tracker=none'
        ) from None


def open_tracker(cfg: Config, run_dir: Path, resume_step: int | None) -> Tracker | None:
    """The tracker `cfg.train.tracker` names, for a fresh run (`resume_step` None) or one resumed at a step."""
    name = cfg.train.tracker
    require_tracker(name)
    if name == "tensorboard":
        return TensorBoardTracker(run_dir / TENSORBOARD_DIR, resume_step)
    if name == "wandb":
        return WandbTracker(cfg, run_dir, resume_step)
    return None


class TensorBoardTracker:
    """Scalars in TensorBoard event files. Each session writes a new event file; its `purge_step` tells
    TensorBoard to drop what earlier sessions logged from that step on (a killed session's steps past the
    checkpoint, which the resumed one logs again; or all of a fresh run's predecessor killed before its
    first save), as metrics.jsonl drops those lines."""

    def __init__(self, log_dir: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge_step = 0 if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step, flush_secs=FLUSH_S)

    def log(self, row: dict[str, Any]) -> None:
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=row["step"])

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class WandbTracker:
    """An offline wandb run in runs/NAME/wandb/ (`wandb sync` uploads it). A resumed session continues the
    same run id; wandb keeps only increasing steps, so steps a killed session logged past the checkpoint
    keep their first values, which a resume reproduces exactly."""

    def __init__(self, cfg: Config, run_dir: Path, resume_step: int | None) -> None:
        import wandb

        id_file = run_dir / WANDB_DIR / WANDB_ID
        if resume_step is not None and id_file.is_file():
            run_id = id_file.read_text().strip()
        else:
            run_id = uuid.uuid4().hex[:12]
            write_atomic(id_file, run_id.encode())
        self.run = wandb.init(
            mode="offline",
            dir=str(run_dir),
            config=cfg.to_dict(),
            name=run_dir.name,
            id=run_id,
            resume="allow",
            # The console is left alone: the progress bar and metrics.jsonl already cover it.
            settings=wandb.Settings(console="off", quiet=True),
        )

    def log(self, row: dict[str, Any]) -> None:
        self.run.log(scalars(row), step=row["step"])

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)
