"""The `mark1` command line: thin typer commands over the stages; the one place that prints and exits.

Each command module imports torch and the stages inside its commands, so `mark1 --help` stays fast.
"""

from __future__ import annotations

import logging
import os

import typer
from rich.logging import RichHandler
from rich.markup import escape

from mark1.cli import data, hub, model, tools
from mark1.cli.options import console
from mark1.errors import Mark1Error

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Mark-1: teach a frozen LLM to understand video through a small trained projector.",
)
app.command()(data.extract)
app.add_typer(data.cache_app, name="cache")
app.command()(data.validate)
app.command("tiny-backbones")(data.tiny_backbones)
app.command()(model.train)
app.command("eval")(model.eval_)
app.command()(model.predict)
app.command()(model.infer)
app.command()(hub.push)
app.command()(hub.export)
app.command()(tools.bench)
app.command()(tools.plan)
app.command()(tools.demo)


def main() -> None:  # [project.scripts] mark1 = "mark1.cli:main"
    # transformers' own warnings and download bars would bury Mark-1's lines (set before it is imported).
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(
        level="INFO",
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    try:
        app()
    except Mark1Error as err:  # expected failures: one red line, no traceback
        console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished work is kept; run the same command again to resume")
        raise SystemExit(130) from None
