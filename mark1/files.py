"""Outputs written whole or not at all, checked before any work starts, and one writer per directory.

Every file Mark-1 writes goes to a temporary name, is fsynced and renamed over the target: a run killed at
any moment leaves the old complete file or the new complete one, never a torn one that parses.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from mark1.errors import Mark1Error


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """Every file directly in `directory`, and the directory itself, flushed to disk."""
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(directory)


@contextmanager
def atomic_file(path: Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Write `path` (and its folders) through a temporary file renamed over it on success; on failure the
    temporary goes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def replace_dir(tmp: Path, directory: Path) -> None:
    """Swap the fully written and fsynced `tmp` in as `directory`: the old one is moved aside as NAME.old,
    the new one renamed in, then the old one removed. A run killed at any moment leaves the old directory
    or the new one whole (readers fall back to NAME.old when NAME is missing)."""
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    fsync_dir(directory.parent)
    shutil.rmtree(old, ignore_errors=True)


def check_output_file(path: Path, flag: str) -> None:
    """Before any work: `path` can be written as a file."""
    if path.is_dir():
        raise Mark1Error(f"{flag} {path} is a directory; give a file path")
    _check_writable_dir(path.parent, flag, path)


def check_output_dir(path: Path, flag: str) -> None:
    """Before any work: `path` is (or can become) a directory that can be written in."""
    if path.exists() and not path.is_dir():
        raise Mark1Error(f"{flag} {path} is a file; give a directory path")
    _check_writable_dir(path, flag, path)


def _check_writable_dir(directory: Path, flag: str, path: Path) -> None:
    """`directory` exists and is writable, or can be created: its nearest existing parent is a writable
    directory. Nothing is created here, so a run refused later leaves nothing behind."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise Mark1Error(f"{flag} {path}: {existing} is a file, so {directory} cannot be a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise Mark1Error(f"{flag} {path}: {existing} is not writable; choose another path")


@contextmanager
def owned_dir(directory: Path, flag: str, lock: str, what: str, error: type[Mark1Error]) -> Iterator[None]:
    """`directory` checked writable and locked for one writer while the block runs. A block that fails
    before writing anything but the lock into a directory it created leaves no directory behind."""
    check_output_dir(directory, flag)
    created = not directory.exists()
    handle = acquire_lock(directory, lock, what, error)
    try:
        yield
    except BaseException:
        if created and [p.name for p in directory.iterdir()] == [lock]:
            shutil.rmtree(directory)
        raise
    finally:
        handle.close()


def acquire_lock(directory: Path, name: str, what: str, error: type[Mark1Error]) -> IO:
    """An exclusive lock on `directory/name`, held while the returned handle is open; it names its holder.

    A second writer (another process, or another writer in this one) is refused with `error`, naming
    the holder. The lock dies with its process, so a killed run never leaves a stale one.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / name, "a+")  # noqa: SIM115 (held open: the lock lives as long as the writer)
    except OSError as err:
        raise error(f"cannot write to {directory} ({err.strerror or err}); check its permissions") from err
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise error(
            f"{what} {directory} is being written by another process ({owner}); wait for it to finish"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
    handle.flush()
    return handle
