"""Stage one on Ray Data (`extract --engine ray`), on a local Ray of 2 CPUs: the same cache as the local
engine, resumed, and a decode worker killed mid-run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mark1.cache import FeatureCache, read_failures, read_manifest
from mark1.errors import ConfigError, Mark1Error
from mark1.stages.extract import extract


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason='the [ray] extra: pip install -e ".[ray]"')
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def _same_cache(a: FeatureCache, b: FeatureCache) -> bool:
    return sorted(a.keys()) == sorted(b.keys()) and all(
        np.array_equal(a[k][0], b[k][0]) and np.array_equal(a[k][1], b[k][1]) for k in a
    )


@pytest.mark.slow
def test_ray_engine_writes_the_local_engines_cache_and_resumes(local_ray, tiny, videos: Path, tmp_path: Path):
    (videos / "broken.mp4").write_bytes(b"not a video")
    local, distributed = tmp_path / "local", tmp_path / "ray"
    extract(tiny.config(), videos, local)
    result = extract(tiny.config("extract.engine=ray", "extract.batch_size=4"), videos, distributed)
    assert (result.num_extracted, result.num_failed) == (6, 1)
    assert _same_cache(FeatureCache(local), FeatureCache(distributed))  # keys, features and frame times
    assert read_failures(distributed).keys() == read_failures(local).keys() == {"broken.mp4"}
    assert not list(distributed.glob("manifest.r*")) and not list((distributed / "shards").glob("*.tmp"))

    shutil.copy(videos / "clip_0000.mp4", videos / "new.mp4")
    again = extract(tiny.config("extract.engine=ray"), videos, distributed)
    # only the new clip (and the broken one, tried again)
    assert (again.num_extracted, again.num_skipped) == (1, 6)
    cache = FeatureCache(distributed)
    assert len(cache) == 7 and np.array_equal(cache["new.mp4"][0], cache["clip_0000.mp4"][0])


@pytest.mark.slow
def test_an_encoder_that_cannot_load_on_the_cluster_is_one_line(
    local_ray, tiny, videos: Path, tmp_path: Path
):
    missing = tmp_path / "no-encoder"
    with pytest.raises(Mark1Error, match=str(missing)) as raised:
        extract(tiny.config("extract.engine=ray", f"encoder={missing}"), videos, tmp_path / "cache")
    assert len(str(raised.value).splitlines()) == 1  # the worker's own error, not Ray's traceback
    assert not (tmp_path / "cache").exists()


def _kill_first(pattern: str, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first process whose title holds `pattern` (Ray names a busy worker after its task)."""
    while not stop.is_set() and not killed:
        ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        for line in ps.splitlines():
            pid, _, args = line.strip().partition(" ")
            if pattern in args and int(pid) != os.getpid():
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.01)


@pytest.mark.slow
def test_a_killed_decode_worker_is_retried_and_every_clip_cached_once(
    local_ray, tiny, videos: Path, tmp_path
):
    for i in range(6):  # 12 clips: decoding lasts long enough to be caught
        shutil.copy(videos / f"clip_{i:04d}.mp4", videos / f"copy_{i:04d}.mp4")
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first, args=("_decode", killed, stop), daemon=True)
    killer.start()
    try:
        result = extract(tiny.config("extract.engine=ray"), videos, tmp_path / "cache")
    finally:
        stop.set()
        killer.join()
    assert killed, "no decode worker was seen to kill"
    keys = read_manifest(tmp_path / "cache").column("key").to_pylist()
    assert (result.num_extracted, result.num_failed) == (12, 0)
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 12  # each clip once, none lost
    assert read_failures(tmp_path / "cache") == {}


def test_the_ray_engine_without_ray_is_one_line_and_the_local_engine_needs_none(
    tiny, videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the [ray] extra were not installed
    monkeypatch.delitem(sys.modules, "mark1.ray_pipeline", raising=False)
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[ray\]"'):
        extract(tiny.config("extract.engine=ray"), videos, tmp_path / "ray")
    assert not (tmp_path / "ray").exists()  # refused before anything was written
    result = extract(tiny.config(), videos, tmp_path / "local")
    assert result.num_extracted == 6
