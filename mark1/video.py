"""Video files → sampled frames: discovery, uniform sampling, decoding (PyAV or decord) and V-JEPA2 preprocessing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mark1.config import DECODE_BACKENDS
from mark1.errors import ConfigError, VideoError

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


@dataclass
class _Sampled:
    """What a decoder returns: the sampled RGB frames and the container's timing, in seconds."""

    pixels: np.ndarray  # (T, H, W, 3) uint8
    times_s: np.ndarray  # presentation time of each sampled frame
    start_s: float  # first frame's presentation time
    end_s: float  # end of the last frame
    fps: float
    num_source_frames: int


def resolve_backend(name: str) -> str:
    """`auto` → pyav: with keyframe-aware seeking and frame threads it decodes the same frames as decord,
    pixel for pixel, 1.05-1.17x faster on `mark1 bench decode`'s clips (docs/performance.md)."""
    if name not in DECODE_BACKENDS:
        raise ConfigError(f"decode backend must be one of {', '.join(DECODE_BACKENDS)}, got {name!r}")
    return "pyav" if name == "auto" else name


def _decode_decord(path: Path, num_frames: int, num_threads: int) -> _Sampled:
    """decord for 8-bit video; deeper pixel formats (10-bit H.264/HEVC) go through PyAV's conversion, so
    both backends give the same frames (decord's own conversion of them differs by up to 44 grey levels)."""
    if _bits_per_sample(path) > 8:
        return _decode_pyav(path, num_frames, num_threads)
    import decord  # imported here: decord's import is slow and only decoding needs it

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads)
    num_source = len(reader)
    if num_source < 1:
        raise VideoError(f"{path}: no video frames")
    indices = sample_indices(num_source, num_frames).tolist()
    stamps = reader.get_frame_timestamp([0, num_source - 1])
    return _Sampled(
        pixels=reader.get_batch(indices).asnumpy(),
        times_s=reader.get_frame_timestamp(indices)[:, 0],
        start_s=float(stamps[0, 0]),
        end_s=float(stamps[1, 1]),
        fps=float(reader.get_avg_fps()),
        num_source_frames=num_source,
    )


def _bits_per_sample(path: Path) -> int:
    """Bits of the video's first pixel component, from the stream's header (nothing decoded)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video or container.streams.video[0].format is None:
            return 8  # let the decoder report what is wrong
        return container.streams.video[0].format.components[0].bits


def _decode_pyav(path: Path, num_frames: int, num_threads: int) -> _Sampled:
    """Index the frames from the packets alone (no decoding), then decode only what the samples need;
    frames are turned upright by the container's display matrix, as players (and decord) show them."""
    import av

    with av.open(str(path)) as container:
        index = _index_packets(container, path, num_threads)
        wanted = index.stamps[sample_indices(len(index.stamps), num_frames)]
        pictures = _decode_at(container, index.stream, sorted(set(wanted.tolist())), index.keyframes, path)
        time_base = float(index.stream.time_base)
        rate = index.stream.average_rate or index.stream.guessed_rate
    fps = float(rate) if rate else 0.0
    last_duration = index.last_duration * time_base or (1.0 / fps if fps else 0.0)
    return _Sampled(
        pixels=np.ascontiguousarray(np.stack([pictures[t] for t in wanted.tolist()])),
        times_s=wanted * time_base,
        start_s=float(index.stamps[0]) * time_base,
        end_s=float(index.stamps[-1]) * time_base + last_duration,
        fps=fps,
        num_source_frames=len(index.stamps),
    )


@dataclass
class _PacketIndex:
    """A video stream's frames as its packets say, nothing decoded: what `_decode_at` needs to seek."""

    stream: Any  # av.VideoStream, set to decode with frame threads
    stamps: np.ndarray  # presentation stamp of every frame, in order
    keyframes: np.ndarray  # the stamps of the keyframes
    last_duration: int  # the last packet's duration, in stream time base (0: unknown)


def _index_packets(container, path: Path, num_threads: int) -> _PacketIndex:
    """Index the first video stream's packets (in presentation order) and set its decoder's threads."""
    if not container.streams.video:
        raise VideoError(f"{path}: no video stream")
    stream = container.streams.video[0]
    packets = sorted(
        (p.pts if p.pts is not None else p.dts, p.duration or 0, p.is_keyframe)
        for p in container.demux(stream)
        if p.size and (p.pts is not None or p.dts is not None)  # skip the demuxer's empty flush packets
    )
    if not packets:
        raise VideoError(f"{path}: no video frames")
    stream.thread_type, stream.thread_count = "FRAME", num_threads  # 0: as many threads as cores
    return _PacketIndex(
        stream,
        np.array([p[0] for p in packets]),
        np.array([p[0] for p in packets if p[2]]),
        packets[-1][1],
    )


@contextmanager
def _decoder_errors(path: Path) -> Iterator[None]:
    """Any decoder's own exception for a container or codec failure, as one VideoError naming the file."""
    try:
        yield
    except VideoError:
        raise
    except Exception as err:  # each decoder raises its own types for every container/codec failure
        raise VideoError(
            f"{path}: cannot decode ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from err


def frames_at(path: Path, times_s: list[float], num_threads: int = 0) -> list[np.ndarray]:
    """The RGB frames (H, W, 3) uint8, upright, shown at `times_s`: seconds from the first frame, as
    `Clip.frame_times_s` and the cache's times count them. Only what they need is decoded (PyAV), as
    stage one decodes its samples; a time past the end gives the last frame."""
    import av

    with _decoder_errors(path), av.open(str(path)) as container:
        index = _index_packets(container, path, num_threads)
        offsets = (index.stamps - index.stamps[0]) * float(index.stream.time_base)
        # the frame on screen at t: the last one presented at or before it (a hair of slack for rounding)
        shown = [
            index.stamps[max(0, int(np.searchsorted(offsets, t + 1e-6, side="right")) - 1)] for t in times_s
        ]
        wanted = sorted(set(int(s) for s in shown))
        pictures = _decode_at(container, index.stream, wanted, index.keyframes, path)
    return [pictures[int(s)] for s in shown]


def _decode_at(
    container, stream, targets: list[int], keyframes: np.ndarray, path: Path
) -> dict[int, np.ndarray]:
    """RGB frames at the presentation stamps `targets` (sorted). Before each target, seek to the keyframe
    preceding it when that keyframe lies ahead of the decoder; otherwise decode on. So short GOPs cost
    a few frames per sample, and long ones (or close samples) are decoded once, sequentially."""
    pictures: dict[int, np.ndarray] = {}
    frames, position = None, None
    for target in targets:
        before = keyframes[keyframes <= target]
        keyframe = int(before[-1]) if len(before) else None
        if frames is None or (keyframe is not None and keyframe > position):
            container.seek(targets[0] if keyframe is None else keyframe, stream=stream, backward=True)
            frames = container.decode(stream)
        for frame in frames:
            position = frame.pts
            if position is None:
                raise VideoError(f"{path}: frames without timestamps; try --decode-backend decord")
            if position >= target:  # the frame shown at `target` (the next one if it did not decode)
                # rotation is the display matrix's counter-clockwise angle; rot90 turns counter-clockwise
                turns = (frame.rotation // 90) % 4
                pictures[target] = np.rot90(frame.to_ndarray(format="rgb24"), turns, axes=(0, 1))
                break
        else:
            raise VideoError(f"{path}: the video ends before its frame at {target * stream.time_base:.3f} s")
    return pictures


DECODERS = {"pyav": _decode_pyav, "decord": _decode_decord}


def load_clip(
    path: Path, num_frames: int, crop_size: int, num_threads: int = 0, backend: str = "auto"
) -> Clip:
    """Decode `num_frames` uniformly sampled frames of `path` and preprocess them for the encoder.

    `num_threads` decoder threads (0: the decoder's choice). Raises VideoError naming the file when it
    cannot be opened or decoded.
    """
    decode = DECODERS[resolve_backend(backend)]
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    with _decoder_errors(path):
        sampled = decode(path, num_frames, num_threads)
    height, width = sampled.pixels.shape[1:3]
    frames = torch.from_numpy(sampled.pixels).permute(0, 3, 1, 2)  # (T, 3, H, W)
    return Clip(
        frames=resize_and_crop(frames, crop_size),
        frame_times_s=[round(float(t) - sampled.start_s, 6) for t in sampled.times_s],
        duration_s=round(sampled.end_s - sampled.start_s, 6),
        fps=sampled.fps,
        num_source_frames=sampled.num_source_frames,
        width=int(width),
        height=int(height),
    )
