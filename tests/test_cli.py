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


def test_help_and_the_error_types_import_no_torch() -> None:
    code = "import sys, mark1, mark1.errors, mark1.cli; assert 'torch' not in sys.modules"
    assert run([sys.executable, "-c", code]).returncode == 0
    proc = run([sys.executable, "-m", "mark1", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "extract" in proc.stdout


def test_missing_videos_dir_is_one_line_and_exit_1(cli, tmp_path: Path) -> None:
    result = cli("extract", "--videos", tmp_path / "nope", "--cache", tmp_path / "cache", "--config", "tiny")
    assert result.code == 1
    assert "does not exist" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "cache").exists()


def test_unknown_config_key_is_a_user_error(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("video:\n  num_frame: 16\n")
    result = cli("cache", "info", tmp_path)
    assert result.code == 1 and "not a Mark-1 feature cache" in result.err
    result = cli("extract", "--videos", tmp_path, "--config", bad)
    assert result.code == 1 and "unknown key(s) num_frame" in result.err and "Traceback" not in result.err


def test_cache_info_reports_clips_and_grid(tiny, videos: Path, tmp_path: Path) -> None:
    from mark1.stages.extract import extract

    extract(tiny.config(), videos, tmp_path / "cache", limit=2)
    result = runner.invoke(app, ["cache", "info", str(tmp_path / "cache")])
    assert result.exit_code == 0
    assert "clips" in result.output and "[8, 4, 4, 64]" in result.output


def test_validate_reports_rows_and_exit_codes(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data"
    ok = runner.invoke(app, ["validate", str(data / "roadbuddy_train_sample.json")])
    assert ok.exit_code == 0 and "4 questions" in ok.output and "warning" in ok.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "question": "q", "choices": ["A. a"], "video_path": "v.mp4"}\n')
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1 and "row 1 (id x)" in result.output


def test_train_resume_eval_predict_through_the_cli(trained, tmp_path: Path) -> None:
    common = ["--cache", str(trained.cache_dir), "--config", "tiny", "--llm", trained.config.llm.name]
    run_dir = tmp_path / "run"
    first = runner.invoke(
        app,
        [
            "train",
            *common,
            "--annotations",
            str(trained.data_dir / "train.json"),
            "--out",
            str(run_dir),
            "--epochs",
            "1",
        ],
    )
    assert first.exit_code == 0, first.output
    resumed = runner.invoke(
        app,
        [
            "train",
            "--cache",
            str(trained.cache_dir),
            "--annotations",
            str(trained.data_dir / "train.json"),
            "--out",
            str(run_dir),
            "--resume",
            "--epochs",
            "2",
        ],
    )
    assert resumed.exit_code == 0, resumed.output
    from mark1.model.checkpoint import Checkpoint

    assert (
        Checkpoint.open(run_dir / "last").training_state()["progress"]["epoch"] == 2
    )  # --epochs applied on top of the run's config
    ckpt = ["--checkpoint", str(run_dir / "best"), "--cache", str(trained.cache_dir)]
    scored = runner.invoke(
        app,
        [
            "eval",
            *ckpt,
            "--annotations",
            str(trained.data_dir / "test.json"),
            "--out",
            str(tmp_path / "eval"),
        ],
    )
    assert scored.exit_code == 0 and (tmp_path / "eval" / "metrics.json").is_file()
    predicted = runner.invoke(
        app,
        [
            "predict",
            *ckpt,
            "--annotations",
            str(trained.data_dir / "public_test.json"),
            "--out",
            str(tmp_path / "submission.csv"),
        ],
    )
    assert predicted.exit_code == 0
    assert (tmp_path / "submission.csv").read_text().splitlines()[0] == "id,answer"
