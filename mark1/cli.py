"""The `mark1` command line: thin typer commands over the stages; the one place that prints and exits."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mark1.config import Config, load_config, mark1_home
from mark1.errors import Mark1Error

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Mark-1: teach a frozen LLM to understand video through a small trained projector.")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect a feature cache.")
app.add_typer(cache_app, name="cache")
console = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="YAML config: a path or a bundled name (tiny, mark1-vjepa2-qwen3).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key, e.g. --set train.lr=1e-4 (repeatable).")]
EncoderOpt = Annotated[str | None, typer.Option("--encoder", help="Video encoder: hub id or local directory.")]
LlmOpt = Annotated[str | None, typer.Option("--llm", help="LLM: hub id or local directory.")]


def build_config(config: str | None, sets: list[str] | None, **flags: object) -> Config:
    """Config file, then --set overrides, then explicit flags (`section.key` → value; None = not given)."""
    overrides = list(sets or [])
    overrides += [f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]
    return load_config(config, overrides)


@contextmanager
def progress_bar(description: str, unit: str = "clips"):
    """A rich progress bar with rate and ETA; yields `update(done, total)`."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console, transient=False,
    ) as progress:
        task = progress.add_task(description, total=None, rate="")

        def update(done: int, total: int, *_: object) -> None:
            elapsed = progress.tasks[task].elapsed or 0.0
            rate = f"{done / elapsed:.1f} {unit}/s" if elapsed > 0 else ""
            progress.update(task, completed=done, total=total, rate=rate)

        yield update


@app.command()
def extract(
    videos: Annotated[Path, typer.Option("--videos", help="Directory searched recursively for videos.")],
    cache: Annotated[Path, typer.Option("--cache", help="Feature cache directory (created or resumed).")] = Path("cache"),
    config: ConfigOpt = None,
    encoder: EncoderOpt = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N videos (sorted by path).")] = None,
    num_frames: Annotated[int | None, typer.Option(help="Frames sampled uniformly per clip.")] = None,
    pool: Annotated[int | None, typer.Option(help="Average pool x pool patches before caching.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda:0, ...")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Clips per encoder call.")] = None,
    decode_workers: Annotated[int | None, typer.Option(help="Decoding processes (0: in the main process).")] = None,
    set_: SetOpt = None,
) -> None:
    """Stage one: run the frozen video encoder once over every video and write the feature cache (resumable)."""
    from mark1.stages.extract import extract as run_extract

    cfg = build_config(config, set_, encoder=encoder, **{
        "video.num_frames": num_frames, "video.pool": pool, "extract.device": device,
        "extract.batch_size": batch_size, "extract.decode_workers": decode_workers})
    with progress_bar("extract") as update:
        result = run_extract(cfg, videos, cache, limit=limit, on_clip=update)
    console.print(
        f"[green]cache[/] {result.cache_dir}: {result.num_extracted} extracted, {result.num_skipped} already cached, "
        f"{result.num_failed} failed ({result.seconds:.1f} s)"
    )
    if result.num_failed:
        console.print(f"[yellow]see {result.cache_dir / 'failures.jsonl'} for the videos that could not be read")
    if result.interrupted:
        console.print("[yellow]interrupted:[/] finished clips are kept; run the same command again to resume")
        raise typer.Exit(130)


@cache_app.command("info")
def cache_info(cache: Annotated[Path, typer.Argument(help="Feature cache directory.")]) -> None:
    """Summarise a cache: clips, failures, bytes per clip, encoder and feature grid."""
    from mark1.cache import FeatureCache

    info = FeatureCache(cache).info()
    table = Table(title=f"feature cache {cache}", show_header=False)
    for key, value in info.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    out.print(table)


@app.command("tiny-backbones")
def tiny_backbones(
    out_dir: Annotated[Path | None, typer.Option("--out", help="Directory for vjepa2-tiny/ and qwen3-tiny/.")] = None,
) -> None:
    """Write tiny random-weight V-JEPA2 and Qwen3 models (with tokenizer) in Hugging Face format, seeded."""
    from mark1.backbones import write_tiny_backbones

    encoder_dir, llm_dir = write_tiny_backbones(out_dir or mark1_home() / "tiny")
    console.print(f"[green]wrote[/] {encoder_dir} and {llm_dir}")


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the generated data, cache and run go.")] = Path("demo"),
    num_videos: Annotated[int, typer.Option(help="Generated clips.")] = 24,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 0,
) -> None:
    """Offline end to end on generated videos with the tiny backbones."""
    from mark1.synthetic import generate, write_roadbuddy

    cfg = load_config("tiny")
    data_dir = out_dir / "data"
    if not (data_dir / "train.json").is_file():
        with console.status(f"generating {num_videos} clips"):
            rows = generate(data_dir, num_videos, seed=seed)
            write_roadbuddy(data_dir / "train.json", rows)
    from mark1.stages.extract import extract as run_extract

    with progress_bar("extract") as update:
        result = run_extract(cfg, data_dir / "videos", out_dir / "cache", on_clip=update)
    console.print(f"[green]cache[/] {result.cache_dir}: {result.num_extracted} extracted, "
                  f"{result.num_skipped} already cached ({result.seconds:.1f} s)")


def main() -> None:  # [project.scripts] mark1 = "mark1.cli:main"
    logging.basicConfig(level="INFO", format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=console, show_path=False)])
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        app()
    except Mark1Error as err:  # expected failures: one red line, no traceback
        console.print(f"[bold red]error:[/] {err}", soft_wrap=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished work is kept; run the same command again to resume")
        raise SystemExit(130) from None
