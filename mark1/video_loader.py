"""Many videos → decoded clips, in worker processes ahead of the encoder (stage one and its benchmark)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from mark1.errors import VideoError
from mark1.video import Clip, find_videos, load_clip, video_key


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
