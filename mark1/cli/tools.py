"""Commands that measure, plan and demonstrate: bench, plan and demo."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.table import Column, Table

from mark1.bench import STAGES as BENCH_STAGES
from mark1.cli.options import (
    ConfigOpt,
    EncoderOpt,
    SetOpt,
    console,
    out_console,
    print_answer,
    print_metrics,
    progress_bar,
    settings,
)

if TYPE_CHECKING:  # the plan imports torch: only its type here, so `mark1 --help` stays fast
    from mark1.plan import Plan


def bench(
    stage: Annotated[str, typer.Argument(help=f"{', '.join(BENCH_STAGES)} or all.")] = "all",
    size: Annotated[
        str, typer.Option(help="tiny (the tiny backbones) or full (ViT-g + Qwen3-0.6B, random weights).")
    ] = "tiny",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda:0, ...")] = "auto",
    clips: Annotated[int, typer.Option(min=1, help="Clips the benchmark writes and extracts.")] = 8,
    memory_gb: Annotated[
        float | None,
        typer.Option(
            help="Cap this process's GPU memory in decimal GB (15 emulates a 16 GB T4's usable memory, as mark1 plan does)."
        ),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON.")] = None,
    llm: Annotated[
        str | None,
        typer.Option(
            help="With --size full: the LLM architecture, random weights (a shipped name such as qwen3-8b, "
            "a hub id or a config.json; default qwen3-0.6b); llm.quantization applies."
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(help='extract: with ray, also the Ray Data engine beside the local one (".[ray]").'),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Measure the stages on this machine, side by side in one run, as ratios where a ratio is the honest figure."""
    stages = BENCH_STAGES if stage == "all" else (stage,)
    if not set(stages) <= set(BENCH_STAGES) or size not in ("tiny", "full"):
        raise typer.BadParameter(f"stage must be one of {', '.join(BENCH_STAGES)} or all; size tiny or full")
    if llm is not None and size != "full":
        raise typer.BadParameter(
            "--llm picks the architecture of --size full; the tiny size uses the config's llm"
        )
    from mark1.bench.run import run_bench
    from mark1.bench.workload import FULL_LLM
    from mark1.files import check_output_file, write_atomic

    if json_out is not None:
        check_output_file(json_out, "--json")
    cfg = settings(config or "tiny", set_, flags={"extract.engine": engine})
    with console.status(f"benchmarking {', '.join(stages)} ({size})"):
        result = run_bench(stages, cfg, size, device, clips, memory_gb, full_llm=llm or FULL_LLM)
    table = Table(
        "stage",
        "figure",
        "value",
        "unit",
        title=f"mark1 bench ({size}, LLM {result.llm}) on {result.machine}",
    )
    for row in result.rows:
        table.add_row(row["stage"], row["figure"], f"{row['value']:,.6g}", row["unit"])
    out_console.print(table)
    if json_out is not None:
        write_atomic(json_out, json.dumps(dataclasses.asdict(result), indent=2).encode())
        console.print(f"[green]wrote[/] {json_out}")


def plan(
    llms: Annotated[
        list[str] | None,
        typer.Argument(
            help="LLMs: shipped names (qwen3-8b), hub ids (Qwen/Qwen3-8B), local model directories or config.json files; default the config's."
        ),
    ] = None,
    quantization: Annotated[str, typer.Option(help="Comma-separated precisions: none, int8, nf4.")] = (
        "none,int8,nf4"
    ),
    batch: Annotated[
        int | None, typer.Option(min=1, help="Plan this batch size only (default 1 to 64).")
    ] = None,
    prompt_tokens: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Tokens per prompt: soft tokens, question, choices, answer (default 512, capped by the config).",
        ),
    ] = None,
    answer_tokens: Annotated[
        int, typer.Option(min=1, help="Answer positions projected to the vocabulary.")
    ] = 16,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option(
            "--gradient-checkpointing/--no-gradient-checkpointing",
            help="Recompute LLM layers in backward (default: llm.gradient_checkpointing).",
        ),
    ] = None,
    encoder: EncoderOpt = None,
    gpus: Annotated[int, typer.Option(min=1, help="GPUs to plan for.")] = 2,
    memory_gb: Annotated[
        float, typer.Option(min=0.1, help="Usable memory per GPU in decimal GB (15: a 16 GB T4).")
    ] = 15.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """GPU memory of training, per LLM and precision, before any download: what fits, and at which batch."""
    from mark1.files import check_output_file, write_atomic
    from mark1.plan import BATCHES, Step, make_plan

    if json_out is not None:
        check_output_file(json_out, "--json")
    cfg = settings(config or "mark1-vjepa2-qwen3", set_, flags={"encoder": encoder})
    step = Step(
        batch=batch or 1,
        prompt_tokens=min(512, cfg.prompt.max_prompt_tokens) if prompt_tokens is None else prompt_tokens,
        answer_tokens=answer_tokens,
        gradient_checkpointing=(
            cfg.llm.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
        ),
    )
    with console.status("planning"):
        result = make_plan(
            llms or [cfg.llm.name],
            [q.strip() for q in quantization.split(",") if q.strip()],
            cfg.encoder,
            cfg.projector,
            cfg.video.num_frames,
            cfg.video.pool,
            cfg.extract.batch_size,
            step,
            gpus,
            memory_gb,
            (batch,) if batch else BATCHES,
        )
    print_plan(result)
    if json_out is not None:
        write_atomic(json_out, json.dumps(dataclasses.asdict(result), indent=2).encode())
        console.print(f"[green]wrote[/] {json_out}")


def print_plan(result: Plan) -> None:
    """The plan as a table, a row per LLM x precision x GPU: the weights (and the projector's AdamW state) it
    holds, then its total at each batch size, green where it fits; then one verdict per LLM x precision."""
    from mark1.plan import gpu_name

    budget = result.memory_gb * 1e9
    batches = [b.batch for b in result.precisions[0].batches] if result.precisions else []
    # Up to the first batch size that fits nowhere: the larger ones only say "no" again (--json has them).
    fits_any = [any(p.batches[i].fits for p in result.precisions) for i in range(len(batches))]
    shown = len(batches) if all(fits_any) else fits_any.index(False) + 1
    checkpointing = "with" if result.gradient_checkpointing else "no"
    table = Table(
        "LLM",
        "quant",
        "GPU",
        "weights",
        *(Column(f"b={b}", justify="right") for b in batches[:shown]),
        title=(
            f"mark1 plan: GB per GPU (decimal, 1e9 bytes) on {result.gpus} x {gpu_name(result.memory_gb)} "
            f"({result.memory_gb:g} GB usable each), {result.prompt_tokens}-token prompts, {checkpointing} "
            "gradient checkpointing, at batch b"
        ),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for i, p in enumerate(result.precisions):
        last_of_llm = i + 1 == len(result.precisions) or result.precisions[i + 1].llm != p.llm
        per_gpu = list(zip(*(b.gpus for b in p.batches[:shown]), strict=True))
        for g, loads in enumerate(per_gpu):
            held = loads[0].parts.get("LLM weights", 0) + loads[0].parts.get("projector state", 0)
            table.add_row(
                p.llm if g == 0 else "",
                p.quantization if g == 0 else "",
                str(loads[0].gpu),
                f"{held / 1e9:.2f}",
                *(
                    f"[{'green' if load.total <= budget else 'red'}]{load.total / 1e9:.1f}[/]"
                    for load in loads
                ),
                end_section=last_of_llm and g + 1 == len(per_gpu),
            )
    out_console.print(table)
    out_console.print(
        "  weights: the LLM's share, and on GPU 0 the projector's fp32 weights, gradients and AdamW moments "
        "(16 bytes a parameter)",
        soft_wrap=True,
    )
    enc = result.encoder
    out_console.print(
        f"  extract: {enc.name} ({enc.params / 1e9:.2f} B parameters) on GPU 0, batch {enc.batch}: "
        f"{enc.weights_bytes / 1e9:.2f} GB weights + {enc.activations_bytes / 1e9:.2f} GB activations = "
        f"{enc.total / 1e9:.2f} GB, {'fits' if enc.fits else 'does not fit'}",
        soft_wrap=True,
    )
    for note in result.notes:
        out_console.print(f"  note: {note}", soft_wrap=True)
    for p in result.precisions:
        out_console.print(p.verdict, soft_wrap=True)


def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Where the generated data, cache and run go.")
    ] = Path("demo"),
    num_videos: Annotated[
        int, typer.Option(min=10, help="Generated clips (80% train, 20% held-out test).")
    ] = 120,
    family: Annotated[
        str,
        typer.Option(
            help="visual (fixed choice order), binding (shuffled choices), open (free descriptions, colour "
            "questions and grounding queries), or side, when, order, count (where and when)."
        ),
    ] = "visual",
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Offline end to end on generated videos with the tiny backbones: extract, train, eval, infer."""
    from mark1.demo import run_demo
    from mark1.synthetic import FAMILIES

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
