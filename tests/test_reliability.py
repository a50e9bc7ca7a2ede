"""Fault injection: fuzzed annotations, kill -9 at random moments, Ctrl-C; nothing lost, no traceback."""

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mark1.annotations import load_annotations
from mark1.cache import FeatureCache, damaged_shards, read_manifest

VALUES = [
    None,
    "",
    " ",
    0,
    -1,
    3.5,
    float("nan"),
    float("inf"),
    True,
    [],
    {},
    [[]],
    ["A. x"],
    "x" * 100_000,
    "B",
    "Z",
    [1, "a"],
    [[2, 1]],
    [float("nan")],
    "\udcff",
    "\x00",
    "A. Có\nB. Không",
]


def _fuzzed_rows(rng: random.Random, count: int) -> list:
    base = {
        "id": "q",
        "question": "Có biển báo không?",
        "choices": ["A. Có", "B. Không"],
        "answer": "A. Có",
        "support_frames": [1.0],
        "spans": [[0.5, 1.5]],
        "video_path": "v.mp4",
    }
    rows = []
    for _ in range(count):
        row = dict(base, id=f"q{rng.randrange(count)}")
        for key in rng.sample(list(base), rng.randint(1, 3)):
            if rng.random() < 0.3:
                row.pop(key)
            else:
                row[key] = rng.choice(VALUES)
        rows.append(row if rng.random() > 0.05 else rng.choice(VALUES))
    return rows


@pytest.mark.parametrize("seed", range(5))
def test_fuzzed_annotations_never_raise_anything_but_a_user_error(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps({"data": _fuzzed_rows(rng, 200)}, allow_nan=True), encoding="utf-8")
    records, issues = load_annotations(path)  # bad rows become issues; nothing raises
    assert len(records) + len({i.row for i in issues if i.level == "error"}) >= 200 - 1
    for record in records:
        if record.kind == "choice":
            assert len(record.choices) >= 2 and (
                record.answer is None or 0 <= record.answer < len(record.choices)
            )
        else:  # no choices: an open question (free text or no answer) or a grounding query (spans, no answer)
            assert not record.choices and record.answer is None
            assert record.kind == "open" or (record.spans and record.answer_text is None)
            assert record.answer_text is None or isinstance(record.answer_text, str)
        assert all(np.isfinite(record.support_frames))


def test_fuzzed_file_through_the_cli_is_exit_1_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "fuzz.jsonl"
    rows = _fuzzed_rows(random.Random(9), 50)
    path.write_text("\n".join(json.dumps(r, allow_nan=True) for r in rows) + "\n{broken", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "mark1", "validate", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "line 51" in proc.stderr


def _extract_command(videos: Path, cache_dir: Path, tiny) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mark1",
        "extract",
        "--videos",
        str(videos),
        "--cache",
        str(cache_dir),
        "--config",
        "tiny",
        "--encoder",
        str(tiny.encoder_dir),
        "--decode-workers",
        "0",
        "--batch-size",
        "1",
        "--set",
        "extract.shard_clips=2",
    ]


@pytest.mark.slow
def test_kill_9_once_a_shard_is_closed_then_resume(tiny, videos: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    for i in range(40):  # enough work that the kill lands mid-run
        shutil.copy(videos / f"clip_{i % 6:04d}.mp4", videos / f"copy_{i}.mp4")
    proc = subprocess.Popen(
        _extract_command(videos, cache_dir, tiny), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline and not list(cache_dir.glob("shards/*.h5")):
        time.sleep(0.05)
    assert proc.poll() is None, "extract finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(_extract_command(videos, cache_dir, tiny), check=True, capture_output=True)
    keys = read_manifest(cache_dir).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 46 and damaged_shards(cache_dir) == []


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(4))
def test_kill_9_at_random_moments_then_resume(tiny, videos: Path, tmp_path: Path, trial: int) -> None:
    for i in range(6):
        shutil.copy(videos / f"clip_{i:04d}.mp4", videos / f"copy_{i}.mp4")
    reference, cache_dir = tmp_path / "reference", tmp_path / "cache"
    subprocess.run(_extract_command(videos, reference, tiny), check=True, capture_output=True)
    delay = random.Random(trial).uniform(4.0, 9.0)  # start-up takes ~4 s: kills land mid-run, some mid-write
    proc = subprocess.Popen(
        _extract_command(videos, cache_dir, tiny), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(_extract_command(videos, cache_dir, tiny), check=True, capture_output=True)
    keys = read_manifest(cache_dir).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 12 and damaged_shards(cache_dir) == []
    expected, got = FeatureCache(reference), FeatureCache(cache_dir)
    assert all(np.array_equal(expected[k][0], got[k][0]) for k in expected)


@pytest.mark.slow
def test_ctrl_c_keeps_finished_clips_and_says_how_to_resume(tiny, videos: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    for i in range(40):  # enough work that the interrupt lands mid-run
        shutil.copy(videos / f"clip_{i % 6:04d}.mp4", videos / f"copy_{i}.mp4")
    proc = subprocess.Popen(
        _extract_command(videos, cache_dir, tiny), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline and not list(cache_dir.glob("shards/*.h5")):
        time.sleep(0.05)
    assert proc.poll() is None, "extract finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr and "run the same command again" in stderr
    kept = len(FeatureCache(cache_dir))
    assert kept >= 2 and damaged_shards(cache_dir) == []
    subprocess.run(_extract_command(videos, cache_dir, tiny), check=True, capture_output=True)
    assert len(FeatureCache(cache_dir)) == 46


def test_cache_of_another_version_or_damaged_spec_is_a_clear_error(
    tiny, videos: Path, tmp_path: Path
) -> None:
    from mark1.errors import CacheError
    from mark1.stages.extract import extract

    cache_dir = tmp_path / "cache"
    extract(tiny.config(), videos, cache_dir, limit=1)
    spec = json.loads((cache_dir / "cache.json").read_text())
    (cache_dir / "cache.json").write_text(json.dumps({**spec, "version": 99}))
    with pytest.raises(CacheError, match="version 99"):
        FeatureCache(cache_dir)
    (cache_dir / "cache.json").write_text("{torn")
    with pytest.raises(CacheError, match="damaged"):
        extract(tiny.config(), videos, cache_dir)


def test_checkpoint_swap_interrupted_and_damaged_state(trained, tmp_path: Path) -> None:
    from mark1.errors import CheckpointError
    from mark1.model.checkpoint import Checkpoint

    run = tmp_path / "run"
    shutil.copytree(trained.run_dir, run)
    (run / "last").rename(
        run / "last.old"
    )  # killed after moving the old one aside, before the new one landed
    assert Checkpoint.open(run / "last").path == run / "last.old"
    Checkpoint.open(run / "last").projector()
    (run / "last.old" / "training_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="start without --resume"):
        Checkpoint.open(run / "last").training_state()
    meta = json.loads((run / "last.old" / "config.json").read_text())
    (run / "last.old" / "config.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(CheckpointError, match="version 99"):
        Checkpoint.open(run / "last")


@pytest.mark.slow
def test_a_4k_clip_is_extracted(tmp_path: Path) -> None:
    import av

    from mark1.video import load_clip

    path = tmp_path / "uhd.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 3840, 2160, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(6):
            image = np.full((2160, 3840, 3), 40 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    clip = load_clip(path, 16, 256)
    assert clip.frames.shape == (16, 3, 256, 256) and (clip.width, clip.height) == (3840, 2160)


@pytest.mark.slow
def test_ctrl_c_in_train_says_how_to_resume_and_resume_works(trained, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "mark1", "train", "--cache", str(trained.cache_dir),
        "--annotations", str(trained.data_dir / "train.json"), "--out", str(run_dir), "--config", "tiny",
        "--llm", trained.config.llm.name, "--epochs", "50",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not (run_dir / "last").exists():
        time.sleep(0.1)
    assert proc.poll() is None, "train finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr and "--resume" in stderr
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "last" / "config.json").read_text())["config"]["train"]["epochs"] == 50
