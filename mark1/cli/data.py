"""Commands over videos, caches and annotation files: extract, cache info / verify, validate, tiny-backbones."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mark1.cli.options import (
    ConfigOpt,
    DecodeBackendOpt,
    EncoderOpt,
    SetOpt,
    console,
    out_console,
    progress_bar,
    settings,
)
from mark1.config import mark1_home

cache_app = typer.Typer(no_args_is_help=True, help="Inspect a feature cache.")


def extract(
    videos: Annotated[Path, typer.Option("--videos", help="Directory searched recursively for videos.")],
    cache: Annotated[
        Path, typer.Option("--cache", help="Feature cache directory (created or resumed).")
    ] = Path("cache"),
    config: ConfigOpt = None,
    encoder: EncoderOpt = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the first N videos (sorted by path).")
    ] = None,
    num_frames: Annotated[int | None, typer.Option(help="Frames sampled uniformly per clip.")] = None,
    pool: Annotated[int | None, typer.Option(help="Average pool x pool patches before caching.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda:0, ...")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Clips per encoder call.")] = None,
    decode_workers: Annotated[
        int | None, typer.Option(help="Decoding processes (0: in the main process).")
    ] = None,
    decode_backend: DecodeBackendOpt = None,
    verify: Annotated[
        bool | None, typer.Option("--verify", help="First read every cached clip; redo the damaged ones.")
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(help='local, or ray: decode on a Ray cluster\'s CPUs, encode on its GPUs (".[ray]").'),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(help="--engine ray: a running cluster (auto, ray://HOST:10001); none: local."),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Stage one: run the frozen video encoder once over every video and write the feature cache (resumable)."""
    from mark1.stages.extract import extract as run_extract

    flags = {
        "encoder": encoder,
        "video.num_frames": num_frames,
        "video.pool": pool,
        "extract.device": device,
        "extract.batch_size": batch_size,
        "extract.decode_workers": decode_workers,
        "extract.decode_backend": decode_backend,
        "extract.verify": verify,
        "extract.engine": engine,
        "extract.address": address,
    }
    cfg = settings(config, set_, flags=flags)
    with progress_bar("extract") as update:
        result = run_extract(cfg, videos, cache, limit=limit, on_clip=update)
    rank = f"rank {os.environ['RANK']}: " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    console.print(
        f"[green]{rank}cache[/] {escape(str(result.cache_dir))}: {result.num_extracted} extracted, {result.num_skipped} already "
        f"cached, {result.num_failed} failed ({result.seconds:.1f} s)"
    )
    if result.num_failed:
        console.print(
            f"[yellow]see {escape(str(result.cache_dir / 'failures.jsonl'))} for the videos that could not be read"
        )
    if result.interrupted:
        console.print("[yellow]interrupted:[/] finished clips are kept; run the same command again to resume")
        raise typer.Exit(130)


@cache_app.command("info")
def cache_info(cache: Annotated[Path, typer.Argument(help="Feature cache directory.")]) -> None:
    """Summarise a cache: clips, failures, bytes per clip, encoder and feature grid."""
    from mark1.cache import FeatureCache

    table = Table(title=f"feature cache {cache}", show_header=False)
    for key, value in FeatureCache(cache).info().items():
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
        more = " ..." if len(keys) > 5 else ""
        console.print(
            "[red]damaged[/] "
            + escape(f"{shard} ({reason}): {len(keys)} clip(s): {', '.join(keys[:5])}{more}"),
            soft_wrap=True,
        )
    if damaged:
        console.print(
            "run `mark1 extract --verify` with the same --videos and --cache to re-extract just those clips"
        )
        raise typer.Exit(1)
    console.print(f"[green]ok[/] {escape(str(cache))}: {len(reader)} clips read whole")


def validate(
    annotations: Annotated[
        Path, typer.Argument(help="Annotation file: RoadBuddy JSON, JSON list, JSONL, Parquet or CSV.")
    ],
    cache: Annotated[Path | None, typer.Option("--cache", help="Also check every video is cached.")] = None,
    config: ConfigOpt = None,
    llm: Annotated[
        str | None,
        typer.Option("--llm", help="Also check the prompt's token caps with this LLM's tokenizer."),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Check an annotation file: every problem with its row and id; exit 1 on errors (warnings pass).
    With --config or --llm, also the rows the prompt's token caps would cut or refuse."""
    from mark1.annotations import load_annotations
    from mark1.cache import FeatureCache
    from mark1.matching import check_against_cache

    records, issues = load_annotations(annotations)
    if cache is not None:
        issues += check_against_cache(records, FeatureCache(cache))
    if config or llm or set_:
        from mark1.backbones import load_tokenizer
        from mark1.data import budget_issues

        cfg = settings(config, set_, flags={"llm.name": llm})
        tokenizer = load_tokenizer(cfg.llm.name)
        issues += budget_issues(records, tokenizer, cfg.projector.num_visual_queries, cfg.prompt)
    for issue in issues:
        colour = "red" if issue.level == "error" else "yellow"
        console.print(f"[{colour}]{issue.level}[/] {escape(str(issue))}", soft_wrap=True)
    errors = sum(i.level == "error" for i in issues)
    counts = Counter(len(r.choices) for r in records if r.kind == "choice")
    kinds = [f"{n} with {k} choices" for k, n in sorted(counts.items())]
    kinds += [f"{n} {kind}" for kind in ("open", "grounding") if (n := sum(r.kind == kind for r in records))]
    by_kind = f" ({', '.join(kinds)})" if kinds else ""
    summary = f"{annotations}: {len(records)} questions{by_kind}, {errors} error(s), "
    summary += f"{len(issues) - errors} warning(s)"
    console.print(escape(summary), soft_wrap=True)
    if errors:
        raise typer.Exit(1)


def tiny_backbones(
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Directory for vjepa2-tiny/, qwen3-tiny/ and FAMILY-tiny/.")
    ] = None,
    family: Annotated[
        list[str] | None,
        typer.Option(
            "--family",
            help="Also a tiny LLM of this family: qwen2, llama (no chat template, no placeholder), llama3, "
            "mistral, gemma2, gemma3; repeatable.",
        ),
    ] = None,
) -> None:
    """Write tiny random-weight V-JEPA2 and Qwen3 models (with tokenizer) in Hugging Face format, seeded; with
    --family, tiny LLMs of other families beside them."""
    from mark1.tiny import TINY_LLMS, write_tiny_backbones, write_tiny_llm

    unknown = sorted(set(family or []) - set(TINY_LLMS))
    if unknown:  # before minutes of writing
        raise typer.BadParameter(
            f"no tiny LLM family {', '.join(map(repr, unknown))}; choose from {', '.join(TINY_LLMS)}"
        )
    out_dir = out_dir or mark1_home() / "tiny"
    written = list(write_tiny_backbones(out_dir))
    written += [write_tiny_llm(out_dir, name) for name in family or []]
    console.print(f"[green]wrote[/] {', '.join(map(str, written))}")
