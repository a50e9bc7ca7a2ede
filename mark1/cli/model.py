"""Commands over the model: train, eval, predict and infer."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mark1.cli.options import (
    AnswerDeviceMapOpt,
    CheckpointOpt,
    ConfigOpt,
    DecodeBackendOpt,
    EncoderOpt,
    LlmOpt,
    QuestionCacheOpt,
    SetOpt,
    checkpoint_config,
    console,
    out_console,
    print_answer,
    print_metrics,
    progress_bar,
    settings,
)


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
    tracker: Annotated[
        str | None,
        typer.Option(help="Also log the curves: tensorboard (--out/tensorboard/), wandb (offline) or none."),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Stage two: train the projector on cached features (no encoder, no video decoding)."""
    from mark1.stages.train import train as run_train

    # A resumed run keeps the config it started with, unless --config says otherwise; flags apply on top.
    base = checkpoint_config(out / "last", hub=False) if resume else None
    flags = {
        "llm.name": llm,
        "train.val_fraction": val_fraction,
        "train.epochs": epochs,
        "train.lr": lr,
        "train.batch_size": batch_size,
        "train.device_map": device_map,
        "train.tracker": tracker,
    }
    cfg = settings(config, set_, base, flags)
    columns = {
        "answer_score": "answered right",
        "hit@1_1s": "hit@1 1s",
        "mIoU": "mIoU",
        "span_mIoU": "span mIoU",
    }
    table = Table("step", *columns.values(), title="validation")

    def on_eval(step: int, metrics: dict) -> None:
        table.add_row(str(step), *(f"{metrics.get(k, float('nan')):.3f}" for k in columns))

    try:
        with progress_bar("train", unit="steps") as update:
            result = run_train(cfg, cache, annotations, out, val, resume, on_step=update, on_eval=on_eval)
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted:[/] {out / 'last'} holds the last save (every epoch, and every "
            "train.save_every steps); continue with the same command and --resume"
        )
        raise typer.Exit(130) from None
    if table.row_count:
        out_console.print(table)
    best = "n/a" if result.best_accuracy is None else f"{result.best_accuracy:.3f}"
    loss = "n/a (no step in this session)" if math.isnan(result.final_loss) else f"{result.final_loss:.3f}"
    console.print(
        f"[green]run[/] {result.run_dir}: at step {result.steps} ({result.seconds:.1f} s this session), last "
        f"loss {loss}, best val answer score {best}, skipped steps {result.skipped_steps}"
    )


def eval_(
    checkpoint: CheckpointOpt,
    cache: QuestionCacheOpt,
    annotations: Annotated[
        Path, typer.Option("--annotations", help="Questions with answers, support frames or spans.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Writes metrics.json + predictions.jsonl here.")
    ] = None,
    config: ConfigOpt = None,
    llm: LlmOpt = None,
    device_map: AnswerDeviceMapOpt = None,
    set_: SetOpt = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Also write one self-contained HTML page: metrics and the worst questions."),
    ] = None,
    report_worst: Annotated[
        int | None, typer.Option(min=0, help="Questions the report shows with timeline and frames (12).")
    ] = None,
    videos: Annotated[
        Path | None,
        typer.Option(help="Folder of the videos, for the report's frames (default: beside --annotations)."),
    ] = None,
) -> None:
    """Score a checkpoint: accuracy (overall, by number of choices) and temporal grounding metrics."""
    from mark1.report import REPORT_WORST
    from mark1.stages.evaluate import evaluate

    cfg = settings(
        config, set_, checkpoint_config(checkpoint), {"llm.name": llm, "answer.device_map": device_map}
    )
    with progress_bar("eval", unit="questions") as update:
        result = evaluate(
            checkpoint,
            cache,
            annotations,
            out,
            cfg=cfg,
            on_item=update,
            report=report,
            report_worst=REPORT_WORST if report_worst is None else report_worst,
            videos=videos,
        )
    print_metrics(result.metrics, f"eval {annotations.name}")
    if out is not None:
        console.print(f"[green]wrote[/] {result.metrics_path} and {result.predictions_path}")
    if result.report_path is not None:
        console.print(f"[green]wrote[/] {result.report_path}")


def predict(
    checkpoint: CheckpointOpt,
    cache: QuestionCacheOpt,
    annotations: Annotated[Path, typer.Option("--annotations", help="Questions (answers not needed).")],
    out: Annotated[Path, typer.Option("--out", help="Submission CSV (id,answer).")] = Path("submission.csv"),
    config: ConfigOpt = None,
    llm: LlmOpt = None,
    device_map: AnswerDeviceMapOpt = None,
    set_: SetOpt = None,
) -> None:
    """Answer every question of a file: submission.csv (id,answer letter) + predictions.jsonl."""
    from mark1.stages.evaluate import predict as run_predict

    cfg = settings(
        config, set_, checkpoint_config(checkpoint), {"llm.name": llm, "answer.device_map": device_map}
    )
    with progress_bar("predict", unit="questions") as update:
        result = run_predict(checkpoint, cache, annotations, out, cfg=cfg, on_item=update)
    console.print(
        f"[green]wrote[/] {result.submission_path} ({result.num_questions} questions) and {result.predictions_path}"
    )
    if result.num_fallback:
        console.print(
            f"[yellow]{result.num_fallback} question(s) had no cached video and were answered 'A' (open ones left blank)"
        )


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
    max_new_tokens: Annotated[int | None, typer.Option(help="Length limit of a free-text answer.")] = None,
    config: ConfigOpt = None,
    encoder: EncoderOpt = None,
    llm: LlmOpt = None,
    device_map: AnswerDeviceMapOpt = None,
    decode_backend: DecodeBackendOpt = None,
    set_: SetOpt = None,
) -> None:
    """One video, one question, one pass: decode, encode, project, answer, and point at the moments."""
    from mark1.stages.infer import infer as run_infer

    flags = {
        "encoder": encoder,
        "llm.name": llm,
        "answer.device_map": device_map,
        "answer.decode_backend": decode_backend,
        "answer.max_new_tokens": max_new_tokens,
    }
    cfg = settings(config, set_, checkpoint_config(checkpoint), flags)
    result = run_infer(checkpoint, video, question, choice or None, cfg, timeline)
    if as_json:
        out_console.print_json(json.dumps(dataclasses.asdict(result), ensure_ascii=False))
        return
    print_answer(result, video.name, question)
    if timeline is not None:
        out_console.print(f"  timeline {timeline}")
