from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mark1.synthetic import SignClip, write_video
from mark1.video import (
    IMAGE_MEAN,
    IMAGE_STD,
    load_clip,
    normalize,
    resize_and_crop,
    resize_shortest_edge,
    resized_hw,
    sample_indices,
)


def test_resize_rule_matches_the_processor_for_the_full_model() -> None:
    assert resize_shortest_edge(256) == 292  # int(256 * 256 / 224)
    assert resized_hw(1440, 2560, 292) == (292, 519)  # long edge truncated, as torchvision does
    assert resized_hw(1920, 1080, 292) == (519, 292)
    assert resized_hw(292, 400, 292) == (292, 400)


def test_resize_and_crop_is_the_uint8_antialiased_resize_then_center_crop() -> None:
    frames = torch.randint(0, 256, (2, 3, 300, 411), dtype=torch.uint8)
    out = resize_and_crop(frames, 256)
    assert out.shape == (2, 3, 256, 256) and out.dtype == torch.uint8
    resized = F.interpolate(
        frames.float(), size=(292, 400), mode="bilinear", antialias=True, align_corners=False
    )
    top, left = int((292 - 256) / 2.0), int((400 - 256) / 2.0)  # 18, 72
    expected = resized.round().clamp(0, 255)[..., top : top + 256, left : left + 256]
    # uint8 and float kernels round differently by at most one grey level; an offset error would be far larger
    assert (out.float() - expected).abs().max() <= 1
    assert (out.float() - expected).abs().mean() < 0.3  # random noise: a one-pixel shift gives ~60


def test_normalize_uses_imagenet_statistics() -> None:
    frame = torch.full((1, 3, 4, 4), 51, dtype=torch.uint8)
    values = normalize(frame)[0, :, 0, 0]
    expected = (torch.tensor([0.2] * 3) - torch.tensor(IMAGE_MEAN)) / torch.tensor(IMAGE_STD)
    assert torch.allclose(values, expected, atol=1e-6)


def test_processor_parity_where_torchvision_exists() -> None:
    pytest.importorskip("torchvision")
    from transformers import VJEPA2VideoProcessor

    video = torch.randint(0, 256, (4, 3, 360, 640), dtype=torch.uint8)
    ours = normalize(resize_and_crop(video, 256))
    theirs = VJEPA2VideoProcessor()(video[None], return_tensors="pt").pixel_values_videos[0]
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() < 1e-5


def test_uniform_sampling_takes_segment_centres_and_repeats_short_clips() -> None:
    assert sample_indices(160, 16).tolist() == list(range(5, 160, 10))
    short = sample_indices(5, 16)
    assert short.min() == 0 and short.max() == 4 and np.all(np.diff(short) >= 0)


@pytest.mark.parametrize("fps", [12, 25, 30])
def test_frame_times_come_from_the_container(tmp_path: Path, fps: int) -> None:
    clip = SignClip("c", fps, 4.0, 160, 96, "Đỏ", "Bên trái", 1.0, 2.0, 0)
    path = tmp_path / "c.mp4"
    write_video(path, clip)
    decoded = load_clip(path, 16, 64)
    n = round(4.0 * fps)
    expected = sample_indices(n, 16) / fps
    assert decoded.num_source_frames == n
    assert decoded.fps == pytest.approx(fps)
    assert decoded.duration_s == pytest.approx(4.0, abs=1e-3)
    assert np.allclose(decoded.frame_times_s, expected, atol=1e-3)


def test_the_sign_is_visible_after_preprocessing(tmp_path: Path) -> None:
    clip = SignClip("c", 25, 4.0, 224, 128, "Đỏ", "Bên phải", 0.0, 4.0, 0)
    write_video(tmp_path / "c.mp4", clip)
    frames = load_clip(tmp_path / "c.mp4", 2, 64).frames.float()
    right, left = frames[0, :, 20:35, 40:60], frames[0, :, 20:35, 4:24]
    assert right[0].mean() > 150 and right[1].mean() < 90  # red disc on the right survives the crop
    assert left[0].mean() < 150


def _write(path: Path, frames: int, width: int, height: int, pix_fmt: str = "yuv420p") -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i in range(frames):
            image = np.full((height, width, 3), (i * 20) % 255, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize(
    ("name", "frames", "width", "height", "pix_fmt"),
    [
        ("single frame.mp4", 1, 160, 96, "yuv420p"),
        ("năm khung hình.mp4", 5, 160, 96, "yuv420p"),  # fewer frames than sampled: repeated, in order
        ("gray.mp4", 20, 160, 96, "gray"),
        ("odd.mkv", 20, 162, 98, "yuv420p"),
        ("portrait.mp4", 20, 96, 160, "yuv420p"),
    ],
)
def test_awkward_videos_decode_to_the_encoder_shape(
    tmp_path: Path, name: str, frames: int, width: int, height: int, pix_fmt: str
) -> None:
    _write(tmp_path / name, frames, width, height, pix_fmt)
    clip = load_clip(tmp_path / name, 16, 64)
    assert clip.frames.shape == (16, 3, 64, 64) and clip.num_source_frames == frames
    assert np.all(np.diff(clip.frame_times_s) >= 0) and clip.duration_s == pytest.approx(
        frames / 25, abs=1e-3
    )


def test_audio_only_file_is_a_video_error(tmp_path: Path) -> None:
    import av

    from mark1.errors import VideoError

    with av.open(str(tmp_path / "audio.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with pytest.raises(VideoError, match="audio.mp4"):
        load_clip(tmp_path / "audio.mp4", 16, 64)


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_variable_frame_rate_times_come_from_each_frames_timestamp(tmp_path: Path, backend: str) -> None:
    from fractions import Fraction

    import av

    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i in range(40):  # 20 frames 20 ms apart, then 20 frames 80 ms apart
            frame = av.VideoFrame.from_ndarray(np.full((96, 160, 3), i * 5, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            pts += 20 if i < 20 else 80
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    clip = load_clip(path, 8, 64, backend=backend)
    # frames 2, 7, ..., 37 (uniform in frame index), at their real presentation times
    assert np.allclose(clip.frame_times_s, [0.04, 0.14, 0.24, 0.34, 0.56, 0.96, 1.36, 1.76], atol=1e-3)


def _encode(path: Path, codec: str, frames: int, options: dict[str, str] | None = None) -> None:
    """A 160x96 25 fps clip whose frames all differ (a grey level a frame, a bar that grows)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = options or {}
        for i in range(frames):
            image = np.full((96, 160, 3), 10 + 2 * i, np.uint8)
            image[:48, : (i * 7) % 160] = 255  # top half: the grey level stays visible below
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize(
    ("name", "codec", "frames", "options"),
    [
        ("a.avi", "mpeg4", 40, None),
        ("b.mkv", "libx264", 40, None),
        ("c.mov", "libx264", 40, None),
        ("d.webm", "libvpx-vp9", 40, None),
        ("short_gop_bframes.mp4", "libx264", 100, {"bf": "3", "g": "6"}),
        ("one_gop.mp4", "libx264", 100, {"g": "300"}),
        ("one_frame.mp4", "libx264", 1, None),
    ],
)
def test_pyav_and_decord_give_the_same_frames_and_times(
    tmp_path: Path, name: str, codec: str, frames: int, options: dict | None
) -> None:
    """The keyframe-seeking PyAV decoder and decord: same sampled frames (pixel for pixel) and timing."""
    _encode(tmp_path / name, codec, frames, options)
    pyav, decord = (load_clip(tmp_path / name, 16, 64, backend=b) for b in ("pyav", "decord"))
    assert torch.equal(pyav.frames, decord.frames)
    assert pyav.frame_times_s == decord.frame_times_s
    assert (pyav.duration_s, pyav.num_source_frames, pyav.fps) == (
        decord.duration_s,
        decord.num_source_frames,
        decord.fps,
    )
    assert len(torch.unique(pyav.frames.flatten(1), dim=0)) == min(frames, 16)  # 16 different frames


def test_both_backends_refuse_broken_files_naming_them(tmp_path: Path) -> None:
    from mark1.errors import VideoError

    write_video(tmp_path / "c.mp4", SignClip("c", 30, 4.0, 160, 96, "Đỏ", "Bên trái", 1.0, 2.0, 0))
    data = (tmp_path / "c.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 9 // 10])
    (tmp_path / "text.mp4").write_text("not a video")
    for name in ("cut.mp4", "text.mp4"):
        for backend in ("pyav", "decord"):
            with pytest.raises(VideoError, match=name):
                load_clip(tmp_path / name, 16, 64, backend=backend)


def test_a_generated_clip_has_the_same_bytes_every_time(tmp_path: Path) -> None:
    """Generated data is reproducible from its seed: x264 at a constant quantizer, on one thread (with its
    rate control's lookahead, 4 encodes of one clip gave 4 different files)."""
    import random

    from mark1.synthetic import random_clip, write_video

    rng = random.Random(1)
    for clip in [random_clip(rng, f"c{i}", 2.0, 3.0) for i in range(3)]:
        files = [tmp_path / f"{clip.name}_{n}.mp4" for n in range(3)]
        for path in files:
            write_video(path, clip)
        assert files[0].read_bytes() == files[1].read_bytes() == files[2].read_bytes()
