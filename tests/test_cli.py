import sys
from pathlib import Path
from subprocess import run

from typer.testing import CliRunner

from mark1.cli import app

runner = CliRunner()


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "extract",
        "train",
        "eval",
        "predict",
        "infer",
        "validate",
        "cache",
        "tiny-backbones",
        "demo",
    ):
        assert command in result.output


def test_missing_videos_dir_is_one_line_and_exit_1(tmp_path: Path) -> None:
    proc = run(
        [
            sys.executable,
            "-m",
            "mark1",
            "extract",
            "--videos",
            str(tmp_path / "nope"),
            "--cache",
            str(tmp_path / "cache"),
            "--config",
            "tiny",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cache").exists()


def test_unknown_config_key_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("video:\n  num_frame: 16\n")
    proc = run(
        [sys.executable, "-m", "mark1", "cache", "info", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "not a Mark-1 feature cache" in proc.stderr
    proc = run(
        [sys.executable, "-m", "mark1", "extract", "--videos", str(tmp_path), "--config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert (
        proc.returncode == 1 and "unknown key(s) num_frame" in proc.stderr and "Traceback" not in proc.stderr
    )


def test_cache_info_reports_clips_and_grid(tiny, videos: Path, tmp_path: Path) -> None:
    from mark1.stages.extract import extract

    extract(tiny.config(), videos, tmp_path / "cache", limit=2)
    result = runner.invoke(app, ["cache", "info", str(tmp_path / "cache")])
    assert result.exit_code == 0
    assert "clips" in result.output and "[8, 4, 4, 64]" in result.output
