import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from mark1.backbones import load_encoder
from mark1.cache import CacheSpec, FeatureCache, read_manifest
from mark1.encoder import VideoEncoder
from mark1.errors import CacheError, VideoError
from mark1.stages.extract import extract
from mark1.video import load_clip, normalize


def _all_features(cache_dir: Path) -> dict[str, np.ndarray]:
    cache = FeatureCache(cache_dir)
    return {key: cache[key][0] for key in cache}


def test_cache_holds_the_encoders_features_and_real_frame_times(tiny, videos: Path, tmp_path: Path) -> None:
    cfg = tiny.config()
    result = extract(cfg, videos, tmp_path / "cache")
    assert (result.num_extracted, result.num_failed) == (6, 0)
    cache = FeatureCache(tmp_path / "cache")
    assert len(cache) == 6 and cache.spec.grid == tiny.grid
    encoder = load_encoder(str(tiny.encoder_dir))
    for key in cache:
        features, frame_times = cache[key]
        clip = load_clip(videos / key, tiny.num_frames, tiny.crop_size)
        with torch.no_grad():
            direct = encoder.encoder(pixel_values_videos=normalize(clip.frames)[None]).last_hidden_state
        assert features.shape == tuple(tiny.grid) and features.dtype == np.float16
        assert np.allclose(features.reshape(-1, tiny.video_dim), direct[0].half().numpy(), atol=1e-3)
        assert np.allclose(frame_times, clip.frame_times_s)
        row = cache.row(key)
        assert row["fps"] == pytest.approx(clip.fps) and row["width"] == clip.width
    times = cache.position_times(cache.keys()[0])
    assert len(times) == tiny.grid[0] and np.all(np.diff(times) > 0)


def test_pooling_averages_patches(tiny, videos: Path, tmp_path: Path) -> None:
    extract(tiny.config(), videos, tmp_path / "full", limit=2)
    extract(tiny.config("video.pool=2"), videos, tmp_path / "pooled", limit=2)
    full, pooled = _all_features(tmp_path / "full"), _all_features(tmp_path / "pooled")
    key = next(iter(full))
    t, h, w, d = full[key].shape
    manual = full[key].astype(np.float32).reshape(t, h // 2, 2, w // 2, 2, d).mean(axis=(2, 4))
    assert pooled[key].shape == (t, h // 2, w // 2, d)
    assert np.allclose(pooled[key], manual, atol=2e-3)


def test_second_run_skips_what_is_cached_and_adds_new_videos(tiny, videos: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    extract(tiny.config(), videos, cache_dir, limit=4)
    (videos / "nested").mkdir()
    shutil.copy(videos / "clip_0005.mp4", videos / "nested" / "new clip.mp4")
    again = extract(tiny.config(), videos, cache_dir)
    assert again.num_skipped == 4 and again.num_extracted == 3
    keys = read_manifest(cache_dir).column("key").to_pylist()
    assert sorted(keys) == sorted(set(keys)) and "nested/new clip.mp4" in keys and len(keys) == 7


def test_bad_files_are_recorded_and_the_run_goes_on(tiny, videos: Path, tmp_path: Path) -> None:
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "notes.mp4").write_text("not a video")
    data = (videos / "clip_0000.mp4").read_bytes()
    (videos / "truncated.mp4").write_bytes(data[: len(data) // 3])
    result = extract(tiny.config(), videos, tmp_path / "cache")
    failures = FeatureCache(tmp_path / "cache").failures()
    assert result.num_extracted + result.num_failed == 9
    assert {"empty.mp4", "notes.mp4"} <= set(failures)
    assert "0 bytes" in failures["empty.mp4"]
    assert set(FeatureCache(tmp_path / "cache").keys()) >= {f"clip_{i:04d}.mp4" for i in range(6)}
    lines = (tmp_path / "cache" / "failures.jsonl").read_text().splitlines()
    assert all(json.loads(line)["error"] for line in lines)


def test_a_fixed_video_is_extracted_on_the_next_run(tiny, videos: Path, tmp_path: Path) -> None:
    (videos / "late.mp4").write_bytes(b"")
    extract(tiny.config(), videos, tmp_path / "cache")
    shutil.copy(videos / "clip_0001.mp4", videos / "late.mp4")
    result = extract(tiny.config(), videos, tmp_path / "cache")
    cache = FeatureCache(tmp_path / "cache")
    assert result.num_extracted == 1 and "late.mp4" in cache and "late.mp4" not in cache.failures()


def test_missing_or_empty_video_dir_is_a_user_error(tiny, tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="does not exist"):
        extract(tiny.config(), tmp_path / "nope", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="no videos"):
        extract(tiny.config(), tmp_path / "empty", tmp_path / "cache")


def test_cache_built_with_another_config_is_refused_untouched(tiny, videos: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    extract(tiny.config(), videos, cache_dir, limit=2)
    before = {p.name: p.stat().st_mtime_ns for p in cache_dir.rglob("*") if p.is_file()}
    with pytest.raises(CacheError, match="num_frames=16.*num_frames=8"):
        extract(tiny.config("video.num_frames=8"), videos, cache_dir)
    with pytest.raises(CacheError, match="pool"):
        extract(tiny.config("video.pool=2"), videos, cache_dir)
    after = {p.name: p.stat().st_mtime_ns for p in cache_dir.rglob("*") if p.is_file()}
    assert before == after


def test_interrupted_run_resumes_with_every_clip_once(tiny, videos: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    extract(tiny.config(), videos, reference)
    cache_dir = tmp_path / "cache"
    cfg = tiny.config("extract.shard_clips=2", "extract.batch_size=1")

    def stop_after_three(done: int, total: int, key: str) -> None:
        if done == 3:
            raise KeyboardInterrupt

    first = extract(cfg, videos, cache_dir, on_clip=stop_after_three)
    assert first.interrupted and 2 <= len(FeatureCache(cache_dir)) <= 3
    extract(cfg, videos, cache_dir)
    keys = read_manifest(cache_dir).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 6
    expected, got = _all_features(reference), _all_features(cache_dir)
    assert all(np.array_equal(expected[k], got[k]) for k in expected)


def test_leftover_temp_shard_and_unlisted_shard_are_handled_on_resume(
    tiny, videos: Path, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    extract(tiny.config("extract.shard_clips=2"), videos, cache_dir, limit=4)
    shards = sorted((cache_dir / "shards").glob("*.h5"))
    # A crash between shard rename and manifest write leaves a closed shard the manifest does not list;
    # a crash mid-shard leaves a torn temp file.
    manifest = read_manifest(cache_dir)
    pq.write_table(
        manifest.filter(pc.not_equal(manifest.column("shard"), shards[-1].name)),
        cache_dir / "manifest.parquet",
    )
    (cache_dir / "shards" / "r000-000099.h5.tmp").write_bytes(b"\x89HDF torn")
    result = extract(tiny.config("extract.shard_clips=2"), videos, cache_dir)
    assert result.num_skipped == 4 and result.num_extracted == 2  # the unlisted shard's clips were adopted
    assert not list((cache_dir / "shards").glob("*.tmp"))
    keys = read_manifest(cache_dir).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 6
    for shard in (cache_dir / "shards").glob("*.h5"):
        with h5py.File(shard, "r") as f:
            assert len(f) > 0


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(
    tiny, videos: Path, tmp_path: Path
) -> None:
    from mark1.cache_writer import CacheWriter

    encoder = VideoEncoder(load_encoder(str(tiny.encoder_dir)), tiny.num_frames)
    first = CacheWriter(tmp_path / "cache", CacheSpec.for_encoder(encoder.describe()))
    try:
        with pytest.raises(CacheError, match=f"pid {os.getpid()}"):
            CacheWriter(tmp_path / "cache", CacheSpec.for_encoder(encoder.describe()))
    finally:
        first.close()
    CacheWriter(tmp_path / "cache", CacheSpec.for_encoder(encoder.describe())).close()


def test_damaged_shard_is_found_and_only_its_clips_are_extracted_again(
    tiny, videos: Path, tmp_path: Path
) -> None:
    from mark1.cache import damaged_shards

    cache_dir = tmp_path / "cache"
    extract(tiny.config("extract.shard_clips=2"), videos, cache_dir)
    reference = _all_features(cache_dir)
    victim = sorted((cache_dir / "shards").glob("*.h5"))[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # a torn copy, a disk error
    assert [shard for shard, _ in damaged_shards(cache_dir)] == [victim.name]
    result = extract(tiny.config("extract.shard_clips=2"), videos, cache_dir)
    assert (result.num_extracted, result.num_skipped) == (2, 4)
    assert damaged_shards(cache_dir) == []
    got = _all_features(cache_dir)
    assert got.keys() == reference.keys() and all(np.array_equal(got[k], reference[k]) for k in got)


def test_full_disk_during_extract_is_a_clear_error_and_the_cache_stays_valid(
    tiny, videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from mark1.cache import damaged_shards

    cache_dir = tmp_path / "cache"
    real = h5py.Group.create_dataset
    calls = {"n": 0}

    def fill_up(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", fill_up)
    with pytest.raises(CacheError, match="No space left on device.*run `mark1 extract` again"):
        extract(tiny.config("extract.shard_clips=2", "extract.batch_size=1"), videos, cache_dir)
    monkeypatch.undo()
    assert len(FeatureCache(cache_dir)) == 2 and damaged_shards(cache_dir) == []
    assert not list((cache_dir / "shards").glob("*.tmp"))
    result = extract(tiny.config("extract.shard_clips=2"), videos, cache_dir)
    assert (result.num_skipped, result.num_extracted) == (2, 4)
