"""Video files → sampled frames: discovery, uniform sampling, decoding (decord) and V-JEPA2 preprocessing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mark1.errors import VideoError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm")
# ImageNet statistics, as VJEPA2VideoProcessor uses them.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass
class Clip:
    """One video sampled and cropped for the encoder, with where its frames sit in time."""

    frames: torch.Tensor  # (T, 3, crop, crop) uint8, resized and center-cropped
    frame_times_s: list[float]  # presentation time of each sampled frame, from the container
    duration_s: float
    fps: float
    num_source_frames: int
    width: int
    height: int


def find_videos(root: Path) -> list[Path]:
    """Every video file under `root`, recursively, in a stable (sorted) order."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def video_key(path: Path, root: Path) -> str:
    """The cache key of a video: its path relative to the videos directory, POSIX style."""
    return path.relative_to(root).as_posix()


def sample_indices(num_source_frames: int, num_frames: int) -> np.ndarray:
    """Uniform sampling: the centre of each of `num_frames` equal segments (repeats frames of short clips)."""
    if num_source_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_source_frames}")
    centres = (np.arange(num_frames) + 0.5) * num_source_frames / num_frames
    return np.minimum(centres.astype(np.int64), num_source_frames - 1)


def resize_shortest_edge(crop_size: int) -> int:
    """The processor's resize target: shortest edge = int(crop * 256 / 224) (292 for a 256 crop)."""
    return int(crop_size * 256 / 224)


def resized_hw(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """Output size of a shortest-edge resize, truncating the long edge as torchvision does."""
    if height <= width:
        return shortest_edge, int(shortest_edge * width / height)
    return int(shortest_edge * height / width), shortest_edge


def resize_and_crop(frames: torch.Tensor, crop_size: int) -> torch.Tensor:
    """(T, 3, H, W) uint8 → (T, 3, crop, crop) uint8: bilinear antialiased shortest-edge resize, center crop.

    Resizing the uint8 frames (not floats) is what makes this equal to VJEPA2VideoProcessor: resizing
    floats differs by up to one grey level.
    """
    height, width = frames.shape[-2:]
    new_h, new_w = resized_hw(height, width, resize_shortest_edge(crop_size))
    if (new_h, new_w) != (height, width):
        frames = F.interpolate(
            frames, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )
    top = int((new_h - crop_size) / 2.0)
    left = int((new_w - crop_size) / 2.0)
    return frames[..., top : top + crop_size, left : left + crop_size].contiguous()


def normalize(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 frames → scaled to [0, 1] and normalised with ImageNet mean/std, in `dtype` (any leading dims)."""
    mean = torch.tensor(IMAGE_MEAN, device=frames.device).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=frames.device).view(3, 1, 1)
    return ((frames.float() / 255.0 - mean) / std).to(dtype)


def load_clip(path: Path, num_frames: int, crop_size: int, num_threads: int = 0) -> Clip:
    """Decode `num_frames` uniformly sampled frames of `path` with decord and preprocess them.

    Raises VideoError naming the file when it cannot be opened or decoded.
    """
    import decord  # imported here: decord's import is slow and only decoding needs it

    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads)
        num_source = len(reader)
        if num_source < 1:
            raise VideoError(f"{path}: no video frames")
        indices = sample_indices(num_source, num_frames)
        pixels = reader.get_batch(indices.tolist()).asnumpy()  # (T, H, W, 3) uint8
        stamps = reader.get_frame_timestamp(np.arange(num_source)[[0, -1]].tolist())
        times = reader.get_frame_timestamp(indices.tolist())[:, 0]
        fps = float(reader.get_avg_fps())
    except VideoError:
        raise
    except Exception as err:  # decord raises its own types for every container/codec failure
        raise VideoError(
            f"{path}: cannot decode ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from err
    start = float(stamps[0, 0])
    height, width = pixels.shape[1:3]
    frames = torch.from_numpy(pixels).permute(0, 3, 1, 2)  # (T, 3, H, W)
    return Clip(
        frames=resize_and_crop(frames, crop_size),
        frame_times_s=[round(float(t) - start, 6) for t in times],
        duration_s=round(float(stamps[1, 1]) - start, 6),
        fps=fps,
        num_source_frames=num_source,
        width=int(width),
        height=int(height),
    )
