"""Write side of the feature cache: shards under temp names, fsync + rename, manifest and failure updates.

A shard is written under a temp name, fsynced and renamed when closed; the manifest (also temp + rename)
only ever lists clips of closed shards. A killed run loses at most its open shard.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mark1.cache import (
    CLIP_FIELDS,
    FAILURES_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    MANIFEST_SCHEMA,
    SPEC_FILE,
    CacheSpec,
    damaged_shards,
    part_paths,
    read_failures,
    read_manifest,
)
from mark1.errors import CacheError
from mark1.files import acquire_lock, fsync_dir, write_atomic


@dataclass
class EncodedClip:
    """One video as stage one hands it to the writer: its features and metadata, or why it failed."""

    key: str
    features: np.ndarray | None = None  # [T', H', W', D] float16
    meta: dict[str, Any] | None = None  # CLIP_FIELDS
    error: str | None = None


def merge_parts(cache_dir: Path) -> None:
    """Fold the per-rank manifest and failure parts of a torchrun into the main files, then remove them."""
    parts = part_paths(cache_dir, "manifest.r*.parquet") + part_paths(cache_dir, "failures.r*.jsonl")
    if not parts:
        return
    manifest = read_manifest(cache_dir)
    done = set(manifest.column("key").to_pylist())
    failures = {k: v for k, v in read_failures(cache_dir).items() if k not in done}
    sink = pa.BufferOutputStream()
    pq.write_table(manifest, sink)
    write_atomic(cache_dir / MANIFEST_FILE, sink.getvalue().to_pybytes())
    write_atomic(cache_dir / FAILURES_FILE, _failure_lines(failures))
    for part in parts:  # a crash before this leaves parts that repeat main rows: readers keep each key once
        part.unlink()


def _failure_lines(failures: dict[str, str]) -> bytes:
    return "".join(
        json.dumps({"key": k, "error": v}, ensure_ascii=False) + "\n" for k, v in failures.items()
    ).encode()


class CacheWriter:
    """Write side of a cache, for one writer: shards with temp names, roll-over, manifest and failures updates.

    Rank 0 (the only writer without torchrun) opens first: it takes the cache's lock, checks (or writes)
    cache.json, folds in the parts of an unfinished torchrun, discards leftover temp shards, sets damaged
    shards aside and adopts closed shards no manifest lists (a crash between rename and manifest). Under
    torchrun each other rank then opens with its own lock and writes its own `manifest.rNNN.parquet` part,
    which rank 0 merges at the end (`merge_parts`).
    """

    def __init__(
        self,
        cache_dir: Path,
        spec: CacheSpec,
        shard_clips: int = 256,
        shard_mb: int = 1024,
        rank: int = 0,
        world: int = 1,
        verify: bool = False,
    ) -> None:
        self.path, self.spec, self.rank = cache_dir, spec, rank
        self.shard_clips, self.shard_bytes = shard_clips, shard_mb * 1_000_000
        self.shard_dir = cache_dir / "shards"
        self._manifest_file, self._failures_file = MANIFEST_FILE, FAILURES_FILE
        if (cache_dir / SPEC_FILE).is_file():
            CacheSpec.read(cache_dir).check_compatible(spec, cache_dir)  # before touching anything
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        lock = LOCK_FILE if rank == 0 else f"{LOCK_FILE}.r{rank:03d}"  # torchrun: one writer per rank
        self._lock = acquire_lock(cache_dir, lock, "cache", CacheError)
        if rank == 0:
            if not (cache_dir / SPEC_FILE).is_file():
                write_atomic(cache_dir / SPEC_FILE, spec.to_json().encode())
            merge_parts(cache_dir)
            for leftover in self.shard_dir.glob("*.h5.tmp"):
                leftover.unlink()
        self.manifest = read_manifest(cache_dir)
        self.failures = read_failures(cache_dir)
        if rank == 0:
            self._drop_damaged(verify)
            self._adopt_orphans()
        self.done_keys = set(self.manifest.column("key").to_pylist())
        if world > 1:  # from here on this rank writes only its own part
            self._manifest_file, self._failures_file = (
                f"manifest.r{rank:03d}.parquet",
                f"failures.r{rank:03d}.jsonl",
            )
            self.manifest, self.failures = MANIFEST_SCHEMA.empty_table(), {}
        self._file: h5py.File | None = None
        self._pending: list[dict[str, Any]] = []
        self._pending_bytes = 0

    def _drop_damaged(self, full: bool) -> None:
        """Unlist the clips of shards that are missing or cannot be read, so this run extracts them again."""
        damaged = {shard for shard, _ in damaged_shards(self.path, full)}
        if damaged:
            for shard in damaged:
                path = self.shard_dir / shard
                if path.exists():
                    path.rename(path.with_name(shard + ".damaged"))  # kept for inspection, never read again
            keep = [s not in damaged for s in self.manifest.column("shard").to_pylist()]
            self.manifest = self.manifest.filter(pa.array(keep))
            self._commit_rows([])

    def _adopt_orphans(self) -> None:
        listed = set(self.manifest.column("shard").to_pylist())
        keys = set(self.manifest.column("key").to_pylist())
        rows = []
        for shard in sorted(self.shard_dir.glob("*.h5")):
            if shard.name in listed:
                continue
            try:
                with h5py.File(shard, "r") as f:
                    found = [self._row(shard.name, name, dict(ds.attrs)) for name, ds in f.items()]
            except OSError:
                shard.unlink()  # damaged beyond reading: its clips are simply extracted again
                continue
            # A clip extracted again elsewhere since (a resume with another rank count) stays listed once.
            rows += [row for row in found if row["key"] not in keys]
            keys |= {row["key"] for row in found}
        if rows:
            self._commit_rows(rows)

    def _row(self, shard: str, dataset: str, attrs: dict[str, Any]) -> dict[str, Any]:
        row = {"key": str(attrs["key"]), "shard": shard, "dataset": dataset, "status": "ok"}
        for name in CLIP_FIELDS:
            value = attrs[name]
            row[name] = [float(v) for v in value] if name == "frame_times_s" else value.item()
        return row

    @contextmanager
    def _disk(self, doing: str) -> Iterator[None]:
        """A full disk or failing drive: drop the open shard, keep everything committed, say how to resume."""
        try:
            yield
        except (OSError, RuntimeError) as err:  # h5py reports write errors as either
            if self._file is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    self._file.close()
                Path(self._file_path).unlink(missing_ok=True)
                self._file, self._pending, self._pending_bytes = None, [], 0
            raise CacheError(
                f"cannot {doing} in {self.path} ({err}); every clip listed in its manifest is kept: "
                "free disk space and run `mark1 extract` again to resume"
            ) from err

    def add(self, key: str, features: np.ndarray, meta: dict[str, Any]) -> None:
        """Append one clip's features [T',H',W',D] (float16) and its metadata (CLIP_FIELDS) to the open shard."""
        if list(features.shape) != self.spec.grid or features.dtype != np.float16:
            raise ValueError(
                f"{key}: features {features.shape} {features.dtype}, cache expects {self.spec.grid} float16"
            )
        with self._disk(f"write {key}"):
            if self._file is None:
                self._open_shard()
            name = f"clip_{len(self._pending):06d}"
            ds = self._file.create_dataset(
                name, data=features, chunks=features.shape
            )  # chunk = one whole clip
            ds.attrs["key"] = key
            for field_name in CLIP_FIELDS:
                ds.attrs[field_name] = meta[field_name]
            self._pending.append(self._row(self._shard_name, name, dict(ds.attrs)))
        self._pending_bytes += features.nbytes
        if len(self._pending) >= self.shard_clips or self._pending_bytes >= self.shard_bytes:
            self.flush()

    def add_failure(self, key: str, error: str) -> None:
        self.failures[key] = error
        with self._disk("record a failed video"):
            self._write_failures()

    def _open_shard(self) -> None:
        taken = [
            int(p.name.split("-")[1].split(".")[0]) for p in self.shard_dir.glob(f"r{self.rank:03d}-*.h5*")
        ]
        self._shard_name = f"r{self.rank:03d}-{max(taken, default=-1) + 1:06d}.h5"
        self._file_path = self.shard_dir / (self._shard_name + ".tmp")
        self._file = h5py.File(self._file_path, "w")

    def flush(self) -> None:
        """Close the open shard durably (fsync + rename) and list its clips in the manifest."""
        if self._file is None:
            return
        with self._disk(f"close shard {self._shard_name}"):
            self._file.close()
            with open(self._file_path, "rb+") as f:
                os.fsync(f.fileno())
            self._file = None
            os.replace(self._file_path, self.shard_dir / self._shard_name)
            fsync_dir(self.shard_dir)
            self._commit_rows(self._pending)
            self._pending, self._pending_bytes = [], 0

    def _commit_rows(self, rows: list[dict[str, Any]]) -> None:
        new = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
        self.manifest = pa.concat_tables([self.manifest, new])
        sink = pa.BufferOutputStream()
        pq.write_table(self.manifest, sink)
        write_atomic(self.path / self._manifest_file, sink.getvalue().to_pybytes())
        committed = {row["key"] for row in rows}
        if committed & set(self.failures):
            self.failures = {k: v for k, v in self.failures.items() if k not in committed}
            self._write_failures()

    def _write_failures(self) -> None:
        write_atomic(self.path / self._failures_file, _failure_lines(self.failures))

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._lock.close()
