"""Stage one: decode every video once, run the frozen encoder, and write the feature cache.

Two engines feed the same writer: `local` (decoding worker processes ahead of one encoder, one process per
GPU under torchrun) and `ray` (a Ray Data pipeline: decoding on any CPU of a cluster, one encoder per GPU;
`mark1.ray_pipeline`). Either way this process is the cache's one writer for the clips it is handed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mark1.cache import CLIP_FIELDS, CacheSpec
from mark1.cache_writer import CacheWriter, EncodedClip, merge_parts
from mark1.config import Config
from mark1.devices import pick_device
from mark1.distributed import barrier, init_distributed
from mark1.encoder import VideoEncoder
from mark1.errors import ConfigError
from mark1.files import check_output_dir
from mark1.video import resolve_backend
from mark1.video_loader import DecodedVideo, decode_loader, list_videos

log = logging.getLogger(__name__)


@dataclass
class ExtractResult:
    cache_dir: Path
    num_extracted: int  # encoded in this run
    num_skipped: int  # already in the cache
    num_failed: int  # recorded in failures.jsonl by this run
    seconds: float
    encode_seconds: float = 0.0  # of `seconds`, spent in the encoder (its busy share: encode / seconds)
    interrupted: bool = False


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
    check_output_dir(cache_dir, "--cache")
    rank, world = init_distributed()
    backend = resolve_backend(cfg.extract.decode_backend)
    pipeline = None
    if cfg.extract.engine == "ray":
        if world > 1:
            raise ConfigError("extract.engine=ray runs its own workers: start it once, not under torchrun")
        from mark1.ray_pipeline import RayPipeline  # the optional extra: imported only when asked for

        pipeline = RayPipeline.start(cfg, backend)
        described = pipeline.encoder
    else:
        if encoder is None:  # tests and the bench pass one in
            encoder = VideoEncoder.load(
                cfg, pick_device(cfg.extract.device)
            )  # under torchrun: this rank's GPU
        described = encoder.describe()
    spec = dataclasses.replace(CacheSpec.for_encoder(described), decode_backend=backend)

    def open_writer() -> CacheWriter:
        ex = cfg.extract
        return CacheWriter(cache_dir, spec, ex.shard_clips, ex.shard_mb, rank, world, verify=ex.verify)

    # Rank 0 prepares the cache (spec, leftovers, damaged shards) while the others wait.
    writer = open_writer() if rank == 0 else None
    barrier(world)
    writer = writer or open_writer()
    todo = [(key, path) for key, path in videos if key not in writer.done_keys]
    result = ExtractResult(cache_dir, 0, len(videos) - len(todo), 0, 0.0)
    todo = split_by_size(todo, world)[rank]
    on_rank = f" on rank {rank} of {world}" if world > 1 else ""
    log.info(
        "%d videos, %d cached already, %d to extract%s", len(videos), result.num_skipped, len(todo), on_rank
    )
    try:
        if todo:
            clips = pipeline.run(todo) if pipeline else _encode_locally(cfg, todo, encoder, backend, result)
            for index, clip in enumerate(clips):
                _store(writer, clip, result)
                if on_clip is not None:
                    on_clip(index + 1, len(todo), clip.key)
    except KeyboardInterrupt:
        result.interrupted = True  # the finished clips are committed below; the batch in hand is redone later
    finally:
        writer.close()
        if pipeline is not None:
            pipeline.close()
    if world > 1 and not result.interrupted:
        barrier(world)  # every rank's part is written: one manifest again
        if rank == 0:
            merge_parts(cache_dir)
    if pipeline is not None:
        result.encode_seconds = pipeline.encode_seconds
    result.seconds = time.perf_counter() - start
    return result


def _store(writer: CacheWriter, clip: EncodedClip, result: ExtractResult) -> None:
    """One clip's features into the cache, or its failure into failures.jsonl: the same for both engines."""
    error = clip.error
    if error is None and not np.isfinite(clip.features).all():  # fp16 overflow or a broken encoder
        error = "the encoder gave NaN or infinite features"
    if error is not None:
        log.warning("skipped %s: %s", clip.key, error)
        writer.add_failure(clip.key, error)
        result.num_failed += 1
    else:
        writer.add(clip.key, np.ascontiguousarray(clip.features), clip.meta)
        result.num_extracted += 1


def _encode_locally(
    cfg: Config, todo: list[tuple[str, Path]], encoder: VideoEncoder, backend: str, result: ExtractResult
) -> Iterator[EncodedClip]:
    """Decode `todo` in worker processes and encode in batches, in order; a video that fails comes out as its
    error."""
    workers = min(cfg.extract.decode_workers, len(todo))
    log.info("decoding with %s in %d worker(s)", backend, workers)
    batch: list[DecodedVideo] = []

    def encode_batch() -> Iterator[EncodedClip]:
        frames = torch.stack([item.clip.frames for item in batch])  # (B, T, 3, crop, crop) uint8
        began = time.perf_counter()
        features = encoder(frames).to("cpu", torch.float16).numpy()  # the copy waits for the GPU
        result.encode_seconds += time.perf_counter() - began
        for item, feats in zip(batch, features, strict=True):
            yield EncodedClip(item.key, feats, {name: getattr(item.clip, name) for name in CLIP_FIELDS})
        batch.clear()

    for item in decode_loader(todo, encoder.num_frames, encoder.crop_size, workers, backend):
        if item.clip is None:
            yield EncodedClip(item.key, error=item.error or "unknown error")
            continue
        batch.append(item)
        if len(batch) == cfg.extract.batch_size:
            yield from encode_batch()
    if batch:
        yield from encode_batch()


def split_by_size(videos: list[tuple[str, Path]], world: int) -> list[list[tuple[str, Path]]]:
    """Deterministic, balanced shares: largest files first, each to the rank with the fewest bytes so far."""
    shares: list[list[tuple[str, Path]]] = [[] for _ in range(world)]
    load = [0] * world
    for key, path in sorted(videos, key=lambda v: (-v[1].stat().st_size, v[0])):
        rank = load.index(min(load))
        shares[rank].append((key, path))
        load[rank] += path.stat().st_size
    return [sorted(share) for share in shares]
