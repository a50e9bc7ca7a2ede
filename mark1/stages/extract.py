"""Stage one: decode every video once, run the frozen encoder, and write the feature cache."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mark1.cache import CLIP_FIELDS
from mark1.cache_writer import CacheWriter, merge_parts
from mark1.config import Config
from mark1.distributed import barrier, init_distributed, local_device
from mark1.encoder import VideoEncoder, pick_device
from mark1.errors import VideoError
from mark1.video import Clip, find_videos, load_clip, resolve_backend, video_key

log = logging.getLogger(__name__)


@dataclass
class ExtractResult:
    cache_dir: Path
    num_videos: int  # videos found (after --limit)
    num_extracted: int  # encoded in this run
    num_skipped: int  # already in the cache
    num_failed: int  # recorded in failures.jsonl by this run
    seconds: float
    encode_seconds: float = 0.0  # of `seconds`, spent in the encoder (its busy share: encode / seconds)
    interrupted: bool = False


@dataclass
class DecodedVideo:
    key: str
    clip: Clip | None
    error: str | None = None


class _DecodeDataset(Dataset):
    """Decodes one video per item; a failure becomes a value, never an exception, so the run goes on."""

    def __init__(
        self, videos: list[tuple[str, Path]], num_frames: int, crop_size: int, num_threads: int, backend: str
    ) -> None:
        self.videos, self.num_frames, self.crop_size = videos, num_frames, crop_size
        self.num_threads, self.backend = num_threads, backend

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> DecodedVideo:
        key, path = self.videos[index]
        try:
            clip = load_clip(path, self.num_frames, self.crop_size, self.num_threads, self.backend)
            return DecodedVideo(key, clip)
        except VideoError as err:
            return DecodedVideo(key, None, str(err))


def _identity(item: DecodedVideo) -> DecodedVideo:
    return item


def list_videos(videos_dir: Path, limit: int | None = None) -> list[tuple[str, Path]]:
    """(key, path) of every video under `videos_dir`; a missing or empty directory is a user error."""
    if not videos_dir.is_dir():
        raise VideoError(f"videos directory {videos_dir} does not exist")
    paths = find_videos(videos_dir)
    if not paths:
        raise VideoError(f"no videos (.mp4 .mkv .avi .mov .webm) found under {videos_dir}")
    return [(video_key(p, videos_dir), p) for p in paths[:limit]]


def decode_loader(
    videos: list[tuple[str, Path]], num_frames: int, crop_size: int, workers: int, backend: str = "auto"
) -> DataLoader:
    """Decoded videos in order, `workers` processes ahead of the consumer so decoding overlaps encoding."""
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))  # decoder threads per worker: share the cores
    dataset = _DecodeDataset(videos, num_frames, crop_size, threads, backend)
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        prefetch_factor=4 if workers else None,
        worker_init_fn=_one_torch_thread,
    )


def _one_torch_thread(worker_id: int) -> None:
    # A decode worker resizes with torch: one thread each, or the workers and the encoder oversubscribe the cores.
    torch.set_num_threads(1)


def extract(
    cfg: Config,
    videos_dir: Path,
    cache_dir: Path,
    limit: int | None = None,
    encoder: VideoEncoder | None = None,
    on_clip: Callable[[int, int, str], None] | None = None,
) -> ExtractResult:
    """Encode every video under `videos_dir` not yet in `cache_dir`; resumable, never fatal for one bad video.

    `on_clip(done, total, key)` is called after each video (progress bars). Ctrl-C keeps finished clips.
    """
    start = time.perf_counter()
    videos = list_videos(videos_dir, limit)
    rank, world = init_distributed()
    if encoder is None:  # tests and infer pass one in
        encoder = VideoEncoder.load(cfg, pick_device(local_device(cfg.extract.device)))
    spec = encoder.spec()

    def open_writer() -> CacheWriter:
        return CacheWriter(cache_dir, spec, cfg.extract.shard_clips, cfg.extract.shard_mb, rank, world)

    # Rank 0 prepares the cache (spec, leftovers, damaged shards) while the others wait.
    writer = open_writer() if rank == 0 else None
    barrier(world)
    writer = writer or open_writer()
    todo = [(key, path) for key, path in videos if key not in writer.done_keys]
    result = ExtractResult(cache_dir, len(videos), 0, len(videos) - len(todo), 0, 0.0)
    todo = split_by_size(todo, world)[rank]
    log.info(
        "%d videos, %d cached already, %d to extract%s",
        len(videos),
        result.num_skipped,
        len(todo),
        f" on rank {rank} of {world}" if world > 1 else "",
    )
    batch: list[DecodedVideo] = []

    def encode_batch() -> None:
        frames = torch.stack([item.clip.frames for item in batch])  # (B, T, 3, crop, crop) uint8
        began = time.perf_counter()
        features = encoder(frames).to("cpu", torch.float16).numpy()  # the copy waits for the GPU
        result.encode_seconds += time.perf_counter() - began
        for item, feats in zip(batch, features, strict=True):
            meta = {name: getattr(item.clip, name) for name in CLIP_FIELDS}
            writer.add(item.key, np.ascontiguousarray(feats), meta)
        result.num_extracted += len(batch)
        batch.clear()

    try:
        if todo:
            workers = min(cfg.extract.decode_workers, len(todo))
            backend = resolve_backend(cfg.extract.decode_backend)
            log.info("decoding with %s in %d worker(s)", backend, workers)
            loader = decode_loader(todo, encoder.num_frames, encoder.crop_size, workers, backend)
            for index, item in enumerate(loader):
                if item.clip is None:
                    log.warning("skipped %s", item.error)
                    writer.add_failure(item.key, item.error or "unknown error")
                    result.num_failed += 1
                else:
                    batch.append(item)
                    if len(batch) == cfg.extract.batch_size:
                        encode_batch()
                if on_clip is not None:
                    on_clip(index + 1, len(todo), item.key)
            if batch:
                encode_batch()
    except KeyboardInterrupt:
        result.interrupted = True  # the finished clips are committed below; the batch in hand is redone later
    finally:
        writer.close()
    if world > 1 and not result.interrupted:
        barrier(world)  # every rank's part is written: one manifest again
        if rank == 0:
            merge_parts(cache_dir)
    result.seconds = time.perf_counter() - start
    return result


def split_by_size(videos: list[tuple[str, Path]], world: int) -> list[list[tuple[str, Path]]]:
    """Deterministic, balanced shares: largest files first, each to the rank with the fewest bytes so far."""
    shares: list[list[tuple[str, Path]]] = [[] for _ in range(world)]
    load = [0] * world
    for key, path in sorted(videos, key=lambda v: (-v[1].stat().st_size, v[0])):
        rank = load.index(min(load))
        shares[rank].append((key, path))
        load[rank] += path.stat().st_size
    return [sorted(share) for share in shares]
