"""Commands that measure and demonstrate: bench and demo."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mark1.bench import STAGES as BENCH_STAGES
from mark1.cli.options import (
    ConfigOpt,
    SetOpt,
    console,
    out_console,
    print_answer,
    print_metrics,
    progress_bar,
    settings,
)


def bench(
    stage: Annotated[str, typer.Argument(help=f"{', '.join(BENCH_STAGES)} or all.")] = "all",
    size: Annotated[
        str, typer.Option(help="tiny (the tiny backbones) or full (ViT-g + Qwen3-0.6B, random weights).")
    ] = "tiny",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda:0, ...")] = "auto",
    clips: Annotated[int, typer.Option(min=1, help="Clips the benchmark writes and extracts.")] = 8,
    memory_gb: Annotated[
        float | None,
        typer.Option(help="Cap this process's GPU memory in GiB (15 emulates a 16 GB T4's usable memory)."),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Measure the stages on this machine, side by side in one run, as ratios where a ratio is the honest figure."""
    stages = BENCH_STAGES if stage == "all" else (stage,)
    if not set(stages) <= set(BENCH_STAGES) or size not in ("tiny", "full"):
        raise typer.BadParameter(f"stage must be one of {', '.join(BENCH_STAGES)} or all; size tiny or full")
    from mark1.bench.run import run_bench
    from mark1.files import check_output_file, write_atomic

    if json_out is not None:
        check_output_file(json_out, "--json")
    cfg = settings(config or "tiny", set_)
    with console.status(f"benchmarking {', '.join(stages)} ({size})"):
        result = run_bench(stages, cfg, size, device, clips, memory_gb)
    table = Table("stage", "figure", "value", "unit", title=f"mark1 bench ({size}) on {result.machine}")
    for row in result.rows:
        table.add_row(row["stage"], row["figure"], f"{row['value']:,.6g}", row["unit"])
    out_console.print(table)
    if json_out is not None:
        write_atomic(json_out, json.dumps(dataclasses.asdict(result), indent=2).encode())
        console.print(f"[green]wrote[/] {json_out}")


def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Where the generated data, cache and run go.")
    ] = Path("demo"),
    num_videos: Annotated[
        int, typer.Option(min=10, help="Generated clips (80% train, 20% held-out test).")
    ] = 120,
    family: Annotated[
        str, typer.Option(help="visual (fixed choice order) or binding (shuffled choices).")
    ] = "visual",
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Offline end to end on generated videos with the tiny backbones: extract, train, eval, infer."""
    from mark1.demo import FAMILIES, run_demo

    if family not in FAMILIES:
        raise typer.BadParameter(f"--family must be one of {', '.join(FAMILIES)}")
    result = run_demo(
        out_dir, num_videos, family, seed, settings(config or "tiny", set_), progress=progress_bar
    )
    print_metrics(
        result.eval.metrics, f"held-out {family}-family questions ({out_dir / 'eval' / 'metrics.json'})"
    )
    print_answer(result.infer, result.infer_video.name, result.infer_question)
    if result.timeline is not None:
        out_console.print(f"  timeline {result.timeline}")
    console.print(
        f"[green]demo[/] done in {out_dir}: cache {result.extract.cache_dir}, run {result.train.run_dir}, "
        f"submission {out_dir / 'submission.csv'}"
    )
