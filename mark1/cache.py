"""The on-disk feature cache and its read side: cache.json (what the features mean), manifest.parquet,
HDF5 shards, failures.jsonl. The write side is `mark1.cache_writer`."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mark1.errors import CacheError
from mark1.video import resize_shortest_edge

if TYPE_CHECKING:  # the cache's read side needs no torch
    from mark1.encoder import EncoderOutput

CACHE_FORMAT = "mark1-feature-cache"
CACHE_VERSION = 1
SPEC_FILE, MANIFEST_FILE, FAILURES_FILE, LOCK_FILE = (
    "cache.json",
    "manifest.parquet",
    "failures.jsonl",
    ".lock",
)
MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("dataset", pa.string()),
        ("duration_s", pa.float64()),
        ("fps", pa.float64()),
        ("num_source_frames", pa.int64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("frame_times_s", pa.list_(pa.float64())),
        ("status", pa.string()),
    ]
)
CLIP_FIELDS = ("duration_s", "fps", "num_source_frames", "width", "height", "frame_times_s")


@dataclass
class CacheSpec:
    """What a cache's features are; a cache is reused only by a run whose spec agrees on `MUST_MATCH`."""

    encoder: str
    encoder_fingerprint: str
    num_frames: int
    crop_size: int
    resize_shortest_edge: int
    tubelet_size: int
    patch_size: int
    pool: int
    grid: list[int]  # [T', H', W', D] of every clip
    dtype: str = "float16"
    decode_backend: str = "unknown"  # the decoder that built it (pyav, decord); both give the same frames
    sampling: str = "uniform: frame floor((i + 0.5) * N / num_frames) for i < num_frames"
    preprocess: str = "uint8 bilinear antialias shortest-edge resize, center crop, /255, ImageNet mean/std"
    time_rule: str = (
        "temporal position j spans sampled frames [j * tubelet, (j + 1) * tubelet); time = their mean"
    )
    format: str = CACHE_FORMAT
    version: int = CACHE_VERSION

    MUST_MATCH = (
        "format",
        "version",
        "encoder_fingerprint",
        "num_frames",
        "crop_size",
        "pool",
        "grid",
        "dtype",
    )

    @classmethod
    def for_encoder(cls, out: EncoderOutput) -> CacheSpec:
        """The spec of the features an encoder writes."""
        return cls(
            encoder=out.name,
            encoder_fingerprint=out.fingerprint,
            num_frames=out.num_frames,
            crop_size=out.crop_size,
            resize_shortest_edge=resize_shortest_edge(out.crop_size),
            tubelet_size=out.tubelet_size,
            patch_size=out.patch_size,
            pool=out.pool,
            grid=list(out.grid),
        )

    def check_compatible(self, other: CacheSpec, where: Path) -> None:
        """Raise CacheError naming the first disagreeing key between this (on disk) and `other` (asked for)."""
        for key in self.MUST_MATCH:
            have, want = getattr(self, key), getattr(other, key)
            if have != want:
                if key == "encoder_fingerprint":
                    have, want = f"{self.encoder} ({have})", f"{other.encoder} ({want})"
                raise CacheError(
                    f"cache {where} was built with {key}={have}, this run asks for {key}={want}; "
                    "use another --cache directory or re-extract into a new one"
                )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def read(cls, cache_dir: Path) -> CacheSpec:
        path = cache_dir / SPEC_FILE
        if not path.is_file():
            raise CacheError(
                f"{cache_dir} is not a Mark-1 feature cache (no {SPEC_FILE}); build one with `mark1 extract`"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError(f"a JSON {type(data).__name__}, not an object")
            if data.get("format") != CACHE_FORMAT:
                raise CacheError(f"{path} is not a Mark-1 cache spec (format {data.get('format')!r})")
            if data.get("version") != CACHE_VERSION:
                raise CacheError(
                    f"{path} has cache version {data.get('version')}, this Mark-1 reads version "
                    f"{CACHE_VERSION}; re-extract into a new cache directory"
                )
            return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})
        except (json.JSONDecodeError, TypeError) as err:
            raise CacheError(f"{path} is damaged ({err}); re-extract into a new cache directory") from err


def position_times(frame_times_s: np.ndarray | list[float], tubelet_size: int) -> np.ndarray:
    """Time in seconds of each temporal position: the mean time of the frames its tubelet covers."""
    times = np.asarray(frame_times_s, dtype=np.float64)
    return times.reshape(-1, tubelet_size).mean(axis=1)


def _read_table(path: Path) -> pa.Table:
    if not path.is_file():
        return MANIFEST_SCHEMA.empty_table()
    try:
        return pq.read_table(path, schema=MANIFEST_SCHEMA)
    except (pa.ArrowInvalid, OSError) as err:
        raise CacheError(
            f"{path} is damaged ({err}); run `mark1 extract` again to rebuild it from the shards"
        ) from err


def part_paths(cache_dir: Path, pattern: str) -> list[Path]:
    """Per-rank files written during a torchrun extraction (merged into the main file at its end)."""
    return sorted(cache_dir.glob(pattern))


def read_manifest(cache_dir: Path) -> pa.Table:
    """Every committed clip: manifest.parquet plus the per-rank parts of an unfinished torchrun, each key once."""
    tables = [_read_table(cache_dir / MANIFEST_FILE)]
    tables += [_read_table(p) for p in part_paths(cache_dir, "manifest.r*.parquet")]
    table = pa.concat_tables(tables)
    keys = table.column("key").to_pylist()
    if len(set(keys)) == len(keys):
        return table
    first = {k: i for i, k in reversed(list(enumerate(keys)))}
    return table.take(sorted(first.values()))


def read_failures(cache_dir: Path) -> dict[str, str]:
    """key → error of every video that could not be extracted (a torn last line from a crash is skipped)."""
    failures: dict[str, str] = {}
    for path in [cache_dir / FAILURES_FILE, *part_paths(cache_dir, "failures.r*.jsonl")]:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
                failures[row["key"]] = row["error"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return failures


class FeatureCache:
    """Read side of a cache: `len(cache)`, `key in cache`, `cache[key] -> (features [T',H',W',D], frame_times_s)`.

    HDF5 handles are opened lazily and per process, so the object can be handed to DataLoader workers.
    """

    def __init__(self, cache_dir: Path | str) -> None:
        self.path = Path(cache_dir)
        if not self.path.is_dir():
            raise CacheError(f"cache directory {self.path} does not exist; build it with `mark1 extract`")
        self.spec = CacheSpec.read(self.path)
        table = read_manifest(self.path)
        self._rows: dict[str, dict[str, Any]] = {row["key"]: row for row in table.to_pylist()}
        self._handles: dict[str, h5py.File] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def keys(self) -> list[str]:
        return list(self._rows)

    def __iter__(self):
        return iter(self._rows)

    def row(self, key: str) -> dict[str, Any]:
        """The manifest row of a clip: shard, duration_s, fps, size, frame_times_s."""
        try:
            return self._rows[key]
        except KeyError:
            raise KeyError(f"{key!r} is not in cache {self.path}") from None

    def __getitem__(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        row = self.row(key)
        try:
            features = self._shard(row["shard"])[row["dataset"]][()]
        except (OSError, KeyError) as err:
            raise CacheError(
                f"cannot read {key!r} from {self.path / 'shards' / row['shard']} ({err}); "
                "run `mark1 cache verify` and re-extract"
            ) from err
        return features, np.asarray(row["frame_times_s"], dtype=np.float64)

    def position_times(self, key: str) -> np.ndarray:
        return position_times(self.row(key)["frame_times_s"], self.spec.tubelet_size)

    def failures(self) -> dict[str, str]:
        return read_failures(self.path)

    def _shard(self, name: str) -> h5py.File:
        if os.getpid() != self._pid:  # h5py handles are not fork-safe: a worker opens its own
            self._handles, self._pid = {}, os.getpid()
        if name not in self._handles:
            self._handles[name] = h5py.File(self.path / "shards" / name, "r")
        return self._handles[name]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}}

    def info(self) -> dict[str, Any]:
        """Summary for `mark1 cache info`."""
        shards = sorted((self.path / "shards").glob("*.h5"))
        total = sum(p.stat().st_size for p in shards)
        return {
            "path": str(self.path),
            "clips": len(self),
            "failures": len(self.failures()),
            "shards": len(shards),
            "bytes": total,
            "bytes_per_clip": total // max(1, len(self)),
            "encoder": self.spec.encoder,
            "encoder_fingerprint": self.spec.encoder_fingerprint,
            "num_frames": self.spec.num_frames,
            "pool": self.spec.pool,
            "grid": self.spec.grid,
            "dtype": self.spec.dtype,
        }


def damaged_shards(cache_dir: Path, full: bool = True) -> list[tuple[str, str]]:
    """(shard, reason) for every listed shard that is missing, unreadable, or (with `full`) holds a clip
    that cannot be read whole with the cache's grid and dtype, or whose features are not all finite."""
    spec = CacheSpec.read(cache_dir)
    by_shard: dict[str, list[str]] = {}
    for row in read_manifest(cache_dir).to_pylist():
        by_shard.setdefault(row["shard"], []).append(row["dataset"])
    found = []
    for shard, datasets in sorted(by_shard.items()):
        try:
            with h5py.File(cache_dir / "shards" / shard, "r") as f:
                for name in datasets:
                    ds = f[name]
                    if list(ds.shape) != spec.grid or ds.dtype != np.dtype(spec.dtype):
                        raise ValueError(f"{name} has shape {ds.shape} {ds.dtype}")
                    if full and not np.isfinite(ds[()]).all():
                        raise ValueError(f"{name} holds NaN or infinite features")
        except (OSError, KeyError, ValueError) as err:
            found.append((shard, f"{type(err).__name__}: {err}"))
    return found
