"""`train.tracker`: TensorBoard event files (and an offline wandb run) hold metrics.jsonl's numbers at its steps."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from mark1.stages.train import train

TRAIN = ("train.epochs=2", "train.batch_size=4", "train.log_every=1")


@pytest.fixture
def cached(trained) -> tuple[Path, Path]:
    """The session's generated questions (10 clips) and their cache, which other tests build anyway."""
    return trained.data_dir, trained.cache_dir


def _jsonl_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as curves: `kind/key` (nested maps `kind/key/inner`) -> [(step, value)], read here
    independently of mark1.tracking."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for inner, number in items:
                if key in ("kind", "step") or not isinstance(number, (int, float)):
                    continue
                tag = f"{row['kind']}/{key}" + (f"/{inner}" if inner is not None else "")
                curves.setdefault(tag, []).append((row["step"], float(number)))
    return curves


def _tensorboard_curves(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files, as TensorBoard itself reads them (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _assert_same_curves(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for tag, points in expected.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag  # float32


def test_tensorboard_holds_metrics_jsonl_and_a_resume_continues_it(tiny, cached, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    data_dir, cache_dir = cached
    cfg = tiny.config(*TRAIN, "train.val_fraction=0.25", "train.tracker=tensorboard")
    log_dir = tmp_path / "run" / "tensorboard"
    total = 0

    def die_at_the_last_step(step: int, steps: int, loss: float) -> None:
        nonlocal total
        total = steps
        if step == steps:  # last/ was saved at the end of epoch 1; the steps of epoch 2 before this are not
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, cache_dir, data_dir / "train.json", tmp_path / "run", on_step=die_at_the_last_step)
    # closed on Ctrl-C: everything logged is on disk, the last step included
    killed = _tensorboard_curves(log_dir)
    assert total >= 4 and [s for s, _ in killed["train/loss"]] == list(range(1, total))
    assert [s for s, _ in killed["eval/answer_score"]] == [total // 2]
    _assert_same_curves(killed, _jsonl_curves(tmp_path / "run"))

    result = train(cfg, cache_dir, data_dir / "train.json", tmp_path / "run", resume=True)
    assert result.steps == total and len(list(log_dir.glob("events.out.tfevents.*"))) == 2
    expected = _jsonl_curves(tmp_path / "run")
    assert {"train/loss", "train/lr", "train/answer_loss", "eval/answer_score"} <= set(expected)
    # log_every=1: every step once, the steps logged again after the resume in place of the killed session's
    assert [s for s, _ in expected["train/loss"]] == list(range(1, total + 1))
    assert [s for s, _ in expected["eval/answer_score"]] == [total // 2, total]  # once per epoch
    _assert_same_curves(_tensorboard_curves(log_dir), expected)


def test_a_fresh_run_hides_the_curves_of_one_killed_before_its_first_save(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed")
    from mark1.tracking import TensorBoardTracker

    # a fresh run in the same --out starts metrics.jsonl anew; its curves start anew too
    for losses in ([9.0, 8.0, 7.0], [5.0, 4.0]):
        tracker = TensorBoardTracker(tmp_path, resume_step=None)
        for step, loss in enumerate(losses, 1):
            tracker.log({"kind": "train", "step": step, "loss": loss, "by": {"4": loss / 10}})
        tracker.close()
    assert _tensorboard_curves(tmp_path) == {
        "train/loss": [(1, 5.0), (2, 4.0)],
        "train/by/4": [(1, pytest.approx(0.5)), (2, pytest.approx(0.4))],
    }


def test_a_missing_tracker_package_is_one_clear_line(tiny, cached, tmp_path: Path, cli, monkeypatch) -> None:
    data_dir, cache_dir = cached
    paths = ["--cache", cache_dir, "--annotations", data_dir / "train.json", "--out", tmp_path / "run"]
    backbones = ["--set", f"encoder={tiny.encoder_dir}", "--set", f"llm={tiny.llm_dir}"]
    args = ["train", *paths, "--config", "tiny", *backbones]
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now fails as if absent
    result = cli(*args, "--tracker", "tensorboard")
    assert result.code == 1
    assert result.err.splitlines()[-1] == (  # one line (after the progress bar's), naming the extra
        "error: train.tracker is 'tensorboard' but the tensorboard package is not installed: "
        'pip install -e ".[tensorboard]", or set train.tracker=none'
    )
    assert not (tmp_path / "run").exists()  # refused before training started
    result = cli(*args, "--tracker", "mlflow")
    assert result.code == 1 and "train.tracker must be one of none, tensorboard, wandb" in result.err


def _wandb_history(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The history records of the offline wandb runs under run_dir/wandb, read from their .wandb files
    (LevelDB log format: 32 KiB blocks of records with a 7-byte header; a 7-byte file header first)."""
    from wandb.proto import wandb_internal_pb2

    curves: dict[str, list[tuple[int, float]]] = {}
    for file in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, pending, offset = file.read_bytes(), b"", 7
        while offset + 7 <= len(data):
            block_left = 32768 - offset % 32768
            if block_left < 7:  # a block's tail too short for a header is padding
                offset += block_left
                continue
            length, kind = struct.unpack("<HB", data[offset + 4 : offset + 7])
            pending += data[offset + 7 : offset + 7 + length]
            offset += 7 + length
            if kind in (1, 4):  # a full record, or the last piece of one
                record = wandb_internal_pb2.Record.FromString(pending)
                pending = b""
                if record.WhichOneof("record_type") == "history":
                    items = {
                        item.key or "/".join(item.nested_key): item.value_json for item in record.history.item
                    }
                    step = int(items.pop("_step"))
                    for key, value in items.items():
                        if not key.startswith("_"):
                            curves.setdefault(key, []).append((step, float(json.loads(value))))
    return curves


def test_wandb_offline_holds_every_scalar_of_metrics_jsonl(tiny, cached, tmp_path: Path, monkeypatch) -> None:
    wandb = pytest.importorskip("wandb", reason="the [wandb] extra is not installed")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))  # its service's logs, not ~/.cache
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    data_dir, cache_dir = cached
    cfg = tiny.config(
        "train.epochs=1",
        "train.batch_size=4",
        "train.log_every=1",
        "train.val_fraction=0.25",
        "train.tracker=wandb",
    )
    train(cfg, cache_dir, data_dir / "train.json", tmp_path / "run")
    wandb.teardown()  # the service process goes with the test
    expected = _jsonl_curves(tmp_path / "run")
    assert "train/loss" in expected and "eval/answer_score" in expected
    # the last step's train and eval rows are one wandb history row: both kept
    _assert_same_curves(_wandb_history(tmp_path / "run"), expected)
