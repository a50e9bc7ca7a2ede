import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mark1.data import split_by_video
from mark1.demo import make_data
from mark1.errors import AnnotationError, CheckpointError, ConfigError
from mark1.stages.extract import extract
from mark1.stages.train import train
from mark1.training import epoch_order, warmup_cosine


@pytest.fixture(scope="module")
def small(tiny, tmp_path_factory) -> tuple[Path, Path]:
    """8 generated clips (16 questions) and their cache, built once for this module."""
    root = tmp_path_factory.mktemp("small")
    make_data(root / "data", 8, "visual", seed=11)
    extract(tiny.config(), root / "data" / "videos", root / "cache")
    return root / "data", root / "cache"


def test_a_run_writes_best_last_and_metrics(trained) -> None:
    for name in ("best", "last"):
        ckpt = trained.run_dir / name
        meta = json.loads((ckpt / "config.json").read_text())
        assert meta["llm"] == trained.config.llm.name and meta["encoder"] == trained.config.encoder
        assert meta["cache"]["grid"] == [8, 4, 4, 64] and meta["prompt_format"]
        assert (
            ckpt / "projector.safetensors"
        ).stat().st_size < 5_000_000  # the projector only, never backbones
        assert not any(k.startswith("llm") for k in load_file(ckpt / "projector.safetensors"))
    lines = [json.loads(line) for line in (trained.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {line["kind"] for line in lines} == {"train", "eval"}
    assert all(line["step"] >= 1 for line in lines)


def test_training_lowers_the_loss(tiny, small, tmp_path: Path) -> None:
    data_dir, cache_dir = small
    losses: list[float] = []
    train(
        tiny.config("train.epochs=6", "train.val_fraction=0", "train.batch_size=4"),
        cache_dir,
        data_dir / "train.json",
        tmp_path / "run",
        on_step=lambda step, total, loss: losses.append(loss),
    )
    assert len(losses) == 6 * 3
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3


def test_training_needs_no_videos(tiny, tmp_path: Path, sign_videos) -> None:
    videos = tmp_path / "videos"
    shutil.copytree(sign_videos[0], videos)
    make_data(tmp_path / "data", 6, "visual", seed=3)
    extract(tiny.config(), tmp_path / "data" / "videos", tmp_path / "cache")
    shutil.rmtree(tmp_path / "data" / "videos")  # stage two reads the cache only
    result = train(
        tiny.config("train.epochs=1"), tmp_path / "cache", tmp_path / "data" / "train.json", tmp_path / "run"
    )
    assert result.steps >= 1 and (tmp_path / "run" / "last" / "projector.safetensors").is_file()


def test_killed_run_resumes_to_the_same_weights(tiny, small, tmp_path: Path) -> None:
    data_dir, cache_dir = small
    cfg = tiny.config(
        "train.epochs=2",
        "train.val_fraction=0",
        "train.batch_size=4",
        "train.save_every=2",
        "projector.dropout=0.1",
    )
    train(cfg, cache_dir, data_dir / "train.json", tmp_path / "straight")

    def die_at_step_5(step: int, total: int, loss: float) -> None:
        if step == 5:  # after the save at step 4: mid-epoch, with one step done past the checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, cache_dir, data_dir / "train.json", tmp_path / "resumed", on_step=die_at_step_5)
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, cache_dir, data_dir / "train.json", tmp_path / "resumed")
    with open(tmp_path / "resumed" / "metrics.jsonl", "a") as log:  # a line torn by the kill, and a blank one
        log.write('\n{"kind": "train", "st')
    result = train(cfg, cache_dir, data_dir / "train.json", tmp_path / "resumed", resume=True)
    assert result.steps == 6
    straight = load_file(tmp_path / "straight" / "last" / "projector.safetensors")
    resumed = load_file(tmp_path / "resumed" / "last" / "projector.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


def test_annotation_videos_missing_from_the_cache_are_named(tiny, small, tmp_path: Path) -> None:
    data_dir, cache_dir = small
    rows = json.loads((data_dir / "train.json").read_text())
    rows["data"][1]["video_path"] = "videos/nowhere.mp4"
    (tmp_path / "bad.json").write_text(json.dumps(rows, ensure_ascii=False))
    with pytest.raises(AnnotationError, match="row 2 .*nowhere.mp4.* not in the cache"):
        train(tiny.config(), cache_dir, tmp_path / "bad.json", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_on_a_cache_of_another_config_is_refused(tiny, trained, small, tmp_path: Path) -> None:
    data_dir, _ = small
    extract(tiny.config("video.pool=2"), data_dir / "videos", tmp_path / "pooled")
    shutil.copytree(trained.run_dir, tmp_path / "run")
    with pytest.raises(CheckpointError, match="pool"):
        train(
            tiny.config("video.pool=2"),
            tmp_path / "pooled",
            data_dir / "train.json",
            tmp_path / "run",
            resume=True,
        )


def test_split_keeps_each_video_on_one_side(trained) -> None:
    from mark1.cache import FeatureCache
    from mark1.matching import require_valid

    records = require_valid(trained.data_dir / "train.json", FeatureCache(trained.cache_dir))
    train_part, val_part = split_by_video(records, 0.25, seed=0)
    assert train_part and val_part and len(train_part) + len(val_part) == len(records)
    assert not {r.key for r in train_part} & {r.key for r in val_part}


def test_schedule_and_epoch_order() -> None:
    factor = warmup_cosine(100, 0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5, abs=0.02) and factor(100) == pytest.approx(0.0)
    assert epoch_order(10, 0, 1) == epoch_order(10, 0, 1) != epoch_order(10, 0, 2)
    assert sorted(epoch_order(10, 0, 3)) == list(range(10))


def test_full_disk_while_checkpointing_keeps_the_last_good_checkpoint(
    tiny, small, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from mark1.model import checkpoint

    data_dir, cache_dir = small
    cfg = tiny.config("train.epochs=2", "train.val_fraction=0", "train.batch_size=4", "train.save_every=2")
    real_save, calls = torch.save, {"n": 0}

    def fill_up(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", fill_up)
    with pytest.raises(CheckpointError, match="previous one there is intact"):
        train(cfg, cache_dir, data_dir / "train.json", tmp_path / "run")
    monkeypatch.undo()
    from mark1.model.checkpoint import Checkpoint

    last = Checkpoint.open(tmp_path / "run" / "last")
    assert last.training_state()["progress"]["step"] == 2  # the save before the failed one
    last.projector()
    assert not (tmp_path / "run" / "last.tmp").exists()
    result = train(cfg, cache_dir, data_dir / "train.json", tmp_path / "run", resume=True)
    assert result.steps == 6
