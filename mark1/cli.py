"""The `mark1` command line: thin typer commands over the stages; the one place that prints and exits."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mark1.config import Config, load_config, mark1_home
from mark1.errors import Mark1Error

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Mark-1: teach a frozen LLM to understand video through a small trained projector.",
)
cache_app = typer.Typer(no_args_is_help=True, help="Inspect a feature cache.")
app.add_typer(cache_app, name="cache")
console = Console(stderr=True)
out_console = Console()

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
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", help="runs/NAME/best or runs/NAME/last.")]
QuestionCacheOpt = Annotated[
    Path, typer.Option("--cache", help="Feature cache holding the questions' videos.")
]
ScoringDeviceMapOpt = Annotated[str | None, typer.Option(help="e.g. projector=cuda:0,llm=cuda:1.")]
DecodeBackendOpt = Annotated[
    str | None,
    typer.Option(help="auto (the fastest here: pyav), pyav or decord; every backend gives the same frames."),
]


def build_config(
    config: str | None, sets: list[str] | None, base: Config | None = None, **flags: object
) -> Config:
    """--config (else `base`, else the defaults), then --set overrides, then explicit flags
    (`section.key` → value; None = not given)."""
    overrides = list(sets or [])
    overrides += [f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]
    return load_config(config, overrides, base=None if config else base)


def checkpoint_config(checkpoint: Path) -> Config:
    from mark1.checkpoint import load_config_of

    return load_config_of(checkpoint)


@contextmanager
def progress_bar(description: str, unit: str = "clips"):
    """A rich progress bar with rate and ETA; yields `update(done, total)`. Under torchrun, rank 0's only."""
    if int(os.environ.get("RANK", "0")) > 0:
        yield lambda *_: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=None, rate="", start=False)

        def update(done: int, total: int, *_: object) -> None:
            if not progress.tasks[task].started:  # time from the first item, not from model loading
                progress.start_task(task)
            elapsed = progress.tasks[task].elapsed or 0.0
            rate = f"{done / elapsed:.1f} {unit}/s" if elapsed > 0 else ""
            progress.update(task, completed=done, total=total, rate=rate)

        yield update


@app.command()
def extract(
    videos: Annotated[Path, typer.Option("--videos", help="Directory searched recursively for videos.")],
    cache: Annotated[
        Path, typer.Option("--cache", help="Feature cache directory (created or resumed).")
    ] = Path("cache"),
    config: ConfigOpt = None,
    encoder: EncoderOpt = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N videos (sorted by path).")] = None,
    num_frames: Annotated[int | None, typer.Option(help="Frames sampled uniformly per clip.")] = None,
    pool: Annotated[int | None, typer.Option(help="Average pool x pool patches before caching.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda:0, ...")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Clips per encoder call.")] = None,
    decode_workers: Annotated[
        int | None, typer.Option(help="Decoding processes (0: in the main process).")
    ] = None,
    decode_backend: DecodeBackendOpt = None,
    set_: SetOpt = None,
) -> None:
    """Stage one: run the frozen video encoder once over every video and write the feature cache (resumable)."""
    from mark1.stages.extract import extract as run_extract

    cfg = build_config(
        config,
        set_,
        encoder=encoder,
        **{
            "video.num_frames": num_frames,
            "video.pool": pool,
            "extract.device": device,
            "extract.batch_size": batch_size,
            "extract.decode_workers": decode_workers,
            "extract.decode_backend": decode_backend,
        },
    )
    with progress_bar("extract") as update:
        result = run_extract(cfg, videos, cache, limit=limit, on_clip=update)
    rank = f"rank {os.environ['RANK']}: " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    console.print(
        f"[green]{rank}cache[/] {result.cache_dir}: {result.num_extracted} extracted, {result.num_skipped} already cached, "
        f"{result.num_failed} failed ({result.seconds:.1f} s)"
    )
    if result.num_failed:
        console.print(
            f"[yellow]see {result.cache_dir / 'failures.jsonl'} for the videos that could not be read"
        )
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
    out_console.print(table)


@cache_app.command("verify")
def cache_verify(cache: Annotated[Path, typer.Argument(help="Feature cache directory.")]) -> None:
    """Read every clip of a cache; name the damaged shards and clips (exit 1). `mark1 extract` redoes them."""
    from mark1.cache import FeatureCache, damaged_shards

    reader = FeatureCache(cache)
    damaged = damaged_shards(cache)
    for shard, reason in damaged:
        keys = [k for k in reader if reader.row(k)["shard"] == shard]
        console.print(
            f"[red]damaged[/] {shard} ({reason}): {len(keys)} clip(s): {', '.join(keys[:5])}"
            + (" ..." if len(keys) > 5 else ""),
            soft_wrap=True,
        )
    if damaged:
        console.print("run `mark1 extract` with the same --videos and --cache to re-extract just those clips")
        raise typer.Exit(1)
    console.print(f"[green]ok[/] {cache}: {len(reader)} clips read whole")


@app.command("tiny-backbones")
def tiny_backbones(
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Directory for vjepa2-tiny/ and qwen3-tiny/.")
    ] = None,
) -> None:
    """Write tiny random-weight V-JEPA2 and Qwen3 models (with tokenizer) in Hugging Face format, seeded."""
    from mark1.backbones import write_tiny_backbones

    encoder_dir, llm_dir = write_tiny_backbones(out_dir or mark1_home() / "tiny")
    console.print(f"[green]wrote[/] {encoder_dir} and {llm_dir}")


@app.command()
def validate(
    annotations: Annotated[
        Path, typer.Argument(help="Annotation file: RoadBuddy JSON, JSON list, JSONL, Parquet or CSV.")
    ],
    cache: Annotated[Path | None, typer.Option("--cache", help="Also check every video is cached.")] = None,
) -> None:
    """Check an annotation file: every problem with its row and id; exit 1 on errors (warnings pass)."""
    from mark1.annotations import check_against_cache, load_annotations
    from mark1.cache import FeatureCache

    records, issues = load_annotations(annotations)
    if cache is not None:
        issues += check_against_cache(records, FeatureCache(cache))
    for issue in issues:
        colour = "red" if issue.level == "error" else "yellow"
        console.print(f"[{colour}]{issue.level}[/] {issue}", soft_wrap=True)
    errors = sum(i.level == "error" for i in issues)
    counts = Counter(len(r.choices) for r in records)
    console.print(
        f"{annotations}: {len(records)} questions ({', '.join(f'{n} with {k} choices' for k, n in sorted(counts.items()))}), "
        f"{errors} error(s), {len(issues) - errors} warning(s)"
    )
    if errors:
        raise typer.Exit(1)


@app.command()
def train(
    cache: Annotated[Path, typer.Option("--cache", help="Feature cache from `mark1 extract`.")],
    annotations: Annotated[Path, typer.Option("--annotations", help="Training questions with answers.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory: best/, last/, metrics.jsonl.")] = Path(
        "runs/mark1"
    ),
    config: ConfigOpt = None,
    llm: LlmOpt = None,
    val: Annotated[
        Path | None, typer.Option("--val", help="Validation questions (default: hold out videos).")
    ] = None,
    val_fraction: Annotated[
        float | None, typer.Option(help="Share of videos held out when no --val.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from last/.")] = False,
    epochs: Annotated[int | None, typer.Option(help="Epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Questions per batch.")] = None,
    device_map: Annotated[
        str | None, typer.Option(help="e.g. projector=cuda:0,llm=cuda:1 (default auto).")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Stage two: train the projector on cached features (no encoder, no video decoding)."""
    from mark1.stages.train import train as run_train

    # A resumed run keeps the config it started with, unless --config says otherwise; flags apply on top.
    cfg = build_config(
        config,
        set_,
        base=checkpoint_config(out / "last") if resume else None,
        llm=llm,
        **{
            "train.val_fraction": val_fraction,
            "train.epochs": epochs,
            "train.lr": lr,
            "train.batch_size": batch_size,
            "train.device_map": device_map,
        },
    )
    table = Table("step", "accuracy", "hit@1 1s", "mIoU", title="validation")

    def on_eval(step: int, metrics: dict) -> None:
        table.add_row(
            str(step), *(f"{metrics.get(k, float('nan')):.3f}" for k in ("accuracy", "hit@1_1s", "mIoU"))
        )

    with progress_bar("train", unit="steps") as update:
        result = run_train(
            cfg, cache, annotations, out, val_annotations=val, resume=resume, on_step=update, on_eval=on_eval
        )
    if table.row_count:
        out_console.print(table)
    best = "n/a" if result.best_accuracy is None else f"{result.best_accuracy:.3f}"
    console.print(
        f"[green]run[/] {result.run_dir}: {result.steps} steps in {result.seconds:.1f} s, final loss "
        f"{result.final_loss:.3f}, best val accuracy {best}, skipped steps {result.skipped_steps}"
    )


def print_metrics(metrics: dict, title: str) -> None:
    table = Table("metric", "value", title=title)
    for key, value in metrics.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v:.3f}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.3f}"
        table.add_row(key, str(value))
    out_console.print(table)


@app.command("eval")
def eval_(
    checkpoint: CheckpointOpt,
    cache: QuestionCacheOpt,
    annotations: Annotated[Path, typer.Option("--annotations", help="Questions with answers.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Writes metrics.json + predictions.jsonl here.")
    ] = None,
    config: ConfigOpt = None,
    llm: LlmOpt = None,
    device_map: ScoringDeviceMapOpt = None,
) -> None:
    """Score a checkpoint: accuracy (overall, by number of choices) and temporal grounding metrics."""
    from mark1.stages.evaluate import evaluate

    cfg = build_config(
        config, None, checkpoint_config(checkpoint), llm=llm, **{"train.device_map": device_map}
    )
    with progress_bar("eval", unit="questions") as update:
        result = evaluate(checkpoint, cache, annotations, out, cfg=cfg, on_item=update)
    print_metrics(result.metrics, f"eval {annotations.name}")
    if out is not None:
        console.print(f"[green]wrote[/] {result.metrics_path} and {result.predictions_path}")


@app.command()
def predict(
    checkpoint: CheckpointOpt,
    cache: QuestionCacheOpt,
    annotations: Annotated[Path, typer.Option("--annotations", help="Questions (answers not needed).")],
    out: Annotated[Path, typer.Option("--out", help="Submission CSV (id,answer).")] = Path("submission.csv"),
    config: ConfigOpt = None,
    llm: LlmOpt = None,
    device_map: ScoringDeviceMapOpt = None,
) -> None:
    """Answer every question of a file: submission.csv (id,answer letter) + predictions.jsonl."""
    from mark1.stages.evaluate import predict as run_predict

    cfg = build_config(
        config, None, checkpoint_config(checkpoint), llm=llm, **{"train.device_map": device_map}
    )
    with progress_bar("predict", unit="questions") as update:
        result = run_predict(checkpoint, cache, annotations, out, cfg=cfg, on_item=update)
    console.print(
        f"[green]wrote[/] {result.submission_path} ({result.num_questions} questions) and "
        f"{result.predictions_path}"
    )
    if result.num_fallback:
        console.print(f"[yellow]{result.num_fallback} question(s) had no cached video and were answered 'A'")


@app.command()
def infer(
    checkpoint: CheckpointOpt,
    video: Annotated[Path, typer.Option("--video", help="The video file.")],
    question: Annotated[str, typer.Option("--question", help="The question.")],
    choice: Annotated[
        list[str] | None, typer.Option("--choice", help='A choice, e.g. "A. Có" (repeat).')
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    timeline: Annotated[
        Path | None, typer.Option(help="Write a PNG of saliency over time with thumbnails.")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Length limit of a free-text answer.")] = 64,
    config: ConfigOpt = None,
    encoder: EncoderOpt = None,
    llm: LlmOpt = None,
    device_map: Annotated[
        str | None, typer.Option(help="e.g. encoder=cuda:0,projector=cuda:1,llm=cuda:1.")
    ] = None,
    decode_backend: DecodeBackendOpt = None,
) -> None:
    """One video, one question, one pass: decode, encode, project, answer, and point at the moments."""
    from mark1.stages.infer import Mark1, save_timeline

    cfg = build_config(
        config,
        None,
        checkpoint_config(checkpoint),
        encoder=encoder,
        llm=llm,
        **{"train.device_map": device_map, "extract.decode_backend": decode_backend},
    )
    model = Mark1.from_pretrained(checkpoint, cfg)
    result = model.answer(video, question, choice or None, max_new_tokens)
    if timeline is not None:
        save_timeline(result, model.decode(video), timeline)
    if as_json:
        out_console.print_json(json.dumps(dataclasses.asdict(result), ensure_ascii=False))
        return
    out_console.print(f"[bold]{result.answer}[/]")
    for letter, prob in result.probs.items():
        out_console.print(f"  {letter}  {prob:.3f}")
    moments = ", ".join(f"{m['time_s']:.2f} s ({m['score']:.2f})" for m in result.moments)
    out_console.print(f"moments: {moments}")
    out_console.print("timings: " + ", ".join(f"{k} {v:.3f} s" for k, v in result.timings_s.items()))
    if timeline is not None:
        out_console.print(f"timeline: {timeline}")


@app.command()
def bench(
    stage: Annotated[
        str, typer.Argument(help="decode, extract, precision, cache, train, answer, infer or all.")
    ] = "all",
    size: Annotated[
        str, typer.Option(help="tiny (the tiny backbones) or full (ViT-g + Qwen3-0.6B, random weights).")
    ] = "tiny",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda:0, ...")] = "auto",
    clips: Annotated[int, typer.Option(help="Clips the benchmark writes and extracts.")] = 8,
    memory_gb: Annotated[
        float | None,
        typer.Option(help="Cap this process's GPU memory in GiB (15 emulates a 16 GB T4's usable memory)."),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Measure the stages on this machine, side by side in one run, as ratios where a ratio is the honest figure."""
    from mark1.bench import STAGES, run_bench

    stages = STAGES if stage == "all" else (stage,)
    if not set(stages) <= set(STAGES) or size not in ("tiny", "full"):
        raise typer.BadParameter(f"stage must be one of {', '.join(STAGES)} or all; size tiny or full")
    with console.status(f"benchmarking {', '.join(stages)} ({size})"):
        result = run_bench(stages, build_config(config or "tiny", set_), size, device, clips, memory_gb)
    table = Table("stage", "figure", "value", "unit", title=f"mark1 bench ({size}) on {result.machine}")
    for row in result.rows:
        table.add_row(row["stage"], row["figure"], f"{row['value']:,.6g}", row["unit"])
    out_console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(dataclasses.asdict(result), indent=2))
        console.print(f"[green]wrote[/] {json_out}")


@app.command()
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Where the generated data, cache and run go.")
    ] = Path("demo"),
    num_videos: Annotated[int, typer.Option(help="Generated clips (80% train, 20% held-out test).")] = 120,
    family: Annotated[
        str, typer.Option(help="visual (fixed choice order) or binding (shuffled choices).")
    ] = "visual",
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Offline end to end on generated videos with the tiny backbones: extract, train, eval, infer."""
    from mark1.stages.demo import FAMILIES, run_demo

    if family not in FAMILIES:
        raise typer.BadParameter(f"--family must be one of {', '.join(FAMILIES)}")
    cfg = build_config(config or "tiny", set_)
    result = run_demo(out_dir, num_videos, family, seed, cfg, progress=progress_bar)
    print_metrics(
        result.eval.metrics, f"held-out {family}-family questions ({out_dir / 'eval' / 'metrics.json'})"
    )
    answer = result.infer
    out_console.print(f"[bold]infer[/] {result.infer_video.name}: {result.infer_question}")
    out_console.print(
        f"  answer [bold]{answer.answer}[/]  " + "  ".join(f"{k} {v:.2f}" for k, v in answer.probs.items())
    )
    out_console.print(
        "  moments " + ", ".join(f"{m['time_s']:.2f} s ({m['score']:.2f})" for m in answer.moments)
    )
    out_console.print("  timings " + ", ".join(f"{k} {v:.3f} s" for k, v in answer.timings_s.items()))
    if result.timeline is not None:
        out_console.print(f"  timeline {result.timeline}")
    console.print(
        f"[green]demo[/] done in {out_dir}: cache {result.extract.cache_dir}, run {result.train.run_dir}, "
        f"submission {out_dir / 'submission.csv'}"
    )


def main() -> None:  # [project.scripts] mark1 = "mark1.cli:main"
    logging.basicConfig(
        level="INFO",
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False)],
    )
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
