"""Commands over the Hugging Face Hub: push a checkpoint, or export what a push uploads to a local directory.

Neither loads a backbone: a checkpoint's files are copied and its model card written from its config.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mark1.cli.options import CheckpointOpt, console

EvalOpt = Annotated[
    Path | None,
    typer.Option(
        "--eval", help="An eval's metrics.json (`mark1 eval --out DIR`) for the model card's table."
    ),
]


def push(
    checkpoint: CheckpointOpt,
    repo_id: Annotated[str, typer.Option("--repo-id", help="The Hub repo, owner/name (created if missing).")],
    eval_: EvalOpt = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    revision: Annotated[
        str | None, typer.Option("--revision", help="A branch to push to (created from main if missing).")
    ] = None,
) -> None:
    """Upload a checkpoint to the Hugging Face Hub: projector, config.json and a model card (no training state)."""
    from mark1.model.hub import push_checkpoint, read_eval_metrics

    metrics = read_eval_metrics(eval_)
    url = push_checkpoint(checkpoint, repo_id, metrics, private=private or None, revision=revision)
    console.print(f"[green]pushed[/] {checkpoint} to {repo_id}: {url}")
    console.print(
        f"  load it with: mark1 infer --checkpoint {repo_id} ... or Mark1.from_pretrained({repo_id!r})"
    )


def export(
    checkpoint: CheckpointOpt,
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write (new, empty, or an earlier export).")
    ],
    eval_: EvalOpt = None,
    repo_id: Annotated[
        str | None, typer.Option("--repo-id", help="The Hub id the model card's examples name.")
    ] = None,
) -> None:
    """Write what `mark1 push` uploads to a local directory: projector, config.json and a model card."""
    from mark1.model.hub import export_checkpoint, read_eval_metrics

    metrics = read_eval_metrics(eval_)
    written = export_checkpoint(checkpoint, out, metrics, repo_id)
    console.print(f"[green]wrote[/] {written} ({', '.join(sorted(p.name for p in written.iterdir()))})")
