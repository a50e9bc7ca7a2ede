"""What the commands share: the consoles, option types, config assembly, progress bars and tables.

Nothing here imports torch: `mark1 --help` and the commands' argument parsing stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mark1.config import Config, load_config, with_flags

console = Console(stderr=True)  # progress, notes and errors
out_console = Console()  # results: tables, answers, JSON

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="YAML config: a path or a bundled name (tiny, mark1-vjepa2-qwen3)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set train.lr=1e-4 (repeatable)."),
]
EncoderOpt = Annotated[
    str | None, typer.Option("--encoder", help="Video encoder: hub id or local directory.")
]
LlmOpt = Annotated[str | None, typer.Option("--llm", help="LLM: hub id or local directory.")]
CheckpointOpt = Annotated[
    Path,
    typer.Option(
        "--checkpoint", help="runs/NAME/best, runs/NAME/last, or a Hub id owner/name (owner/name@REV)."
    ),
]
QuestionCacheOpt = Annotated[
    Path, typer.Option("--cache", help="Feature cache holding the questions' videos.")
]
AnswerDeviceMapOpt = Annotated[
    str | None,
    typer.Option(help="e.g. encoder=cuda:0,projector=cuda:0,llm=cuda:1 (answer.device_map; default auto)."),
]
DecodeBackendOpt = Annotated[
    str | None,
    typer.Option(help="auto (the fastest here: pyav), pyav or decord; every backend gives the same frames."),
]


def settings(
    config: str | None,
    sets: list[str] | None,
    base: Config | None = None,
    flags: dict[str, object] | None = None,
) -> Config:
    """--config (else `base`, else the defaults), then the --set overrides, then the typed flags
    (`"section.key": value`, None = not given)."""
    cfg = load_config(config, sets, base=None if config else base)
    return with_flags(cfg, flags or {})


def checkpoint_config(checkpoint: Path, hub: bool = True) -> Config:
    """The config a checkpoint was trained with: the base that eval, predict, infer and --resume build on
    (--resume: `hub` False, a local directory only)."""
    from mark1.model.checkpoint import Checkpoint

    return Checkpoint.open(checkpoint, hub=hub).config


@contextmanager
def progress_bar(description: str, unit: str = "clips") -> Iterator[Callable[..., None]]:
    """A rich progress bar with rate and ETA; yields `update(done, total)`. Under torchrun, rank 0's only."""
    if int(os.environ.get("RANK", "0")) > 0:
        yield lambda *_: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=None, rate="", start=False)

        def update(done: int, total: int, *_: object) -> None:
            if not progress.tasks[task].started:  # time from the first item, not from model loading
                progress.start_task(task)
            elapsed = progress.tasks[task].elapsed or 0.0
            rate = f"{done / elapsed:.1f} {unit}/s" if elapsed > 0 else ""
            progress.update(task, completed=done, total=total, rate=rate)

        yield update


def print_metrics(metrics: dict, title: str) -> None:
    table = Table("metric", "value", title=title)
    for key, value in metrics.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v:.3f}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.3f}"
        table.add_row(key, str(value))
    out_console.print(table)


def print_answer(answer, video: str, question: str) -> None:
    """One answer as `mark1 infer` and `mark1 demo` show it: choice, probabilities, moments, timings."""
    out_console.print(f"[bold]{answer.answer}[/]  ({video}: {question})")
    if answer.probs:
        out_console.print("  " + "  ".join(f"{k} {v:.3f}" for k, v in answer.probs.items()))
    out_console.print(
        "  moments " + ", ".join(f"{m['time_s']:.2f} s ({m['score']:.2f})" for m in answer.moments)
    )
    if answer.windows:
        shown = answer.windows[:3]
        out_console.print(
            "  windows "
            + ", ".join(f"{w['start_s']:.2f}-{w['end_s']:.2f} s ({w['score']:.2f})" for w in shown)
        )
    out_console.print("  timings " + ", ".join(f"{k} {v:.3f} s" for k, v in answer.timings_s.items()))
