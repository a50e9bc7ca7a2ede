"""Generated driving-like clips with a known "sign" event, and RoadBuddy-format questions about them.

Every clip shows a road with lane stripes scrolling towards the viewer; a coloured disc (the sign) appears
on the left or right side during a known interval. Questions ask what is seen (colour, side), so the answer,
its support frames (seconds inside the interval) and its span (the interval) are known exactly. Seeded: the
same seed gives the same videos and annotations.

Families: visual (colour and side, choices in a fixed order), binding (the same, choices shuffled), open
(a free description "Biển báo màu đỏ, bên trái.", a colour question, and a grounding query with only a span).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

COLOURS = {  # name in the question → RGB
    "Đỏ": (220, 30, 30),
    "Xanh lá": (30, 190, 60),
    "Xanh dương": (40, 80, 230),
    "Vàng": (235, 215, 30),
}
SIDES = ("Bên trái", "Bên phải")
# question type → (question, choices in their fixed order, attribute of the clip that answers it)
QUESTION_TYPES = {
    "colour3": ("Biển báo trong video có màu gì?", ["Đỏ", "Xanh lá", "Xanh dương"], "colour"),
    "colour4": ("Biển báo xuất hiện trong video màu gì?", ["Đỏ", "Xanh lá", "Xanh dương", "Vàng"], "colour"),
    "side": ("Biển báo nằm ở bên nào của đường?", list(SIDES), "side"),
}
DESCRIBE = "Mô tả biển báo trong video."  # the open family's question
LOCATE = "Biển báo xuất hiện trong đoạn nào của video?"  # its grounding query: spans, no answer
FAMILIES = ("visual", "binding", "open")
FPS_CHOICES = (12, 25, 30)
SIZE_CHOICES = ((160, 96), (192, 108), (224, 128))


@dataclass
class SignClip:
    """Everything that defines one generated clip."""

    name: str
    fps: int
    duration_s: float
    width: int
    height: int
    colour: str
    side: str
    start_s: float  # the sign is visible during [start_s, end_s)
    end_s: float
    seed: int


def random_clip(rng: random.Random, name: str, min_s: float = 4.0, max_s: float = 10.0) -> SignClip:
    duration = round(rng.uniform(min_s, max_s), 2)
    shown = round(rng.uniform(1.5, 2.5), 2)
    start = round(rng.uniform(0.3, duration - shown - 0.3), 2)
    width, height = rng.choice(SIZE_CHOICES)
    colour = rng.choice(list(COLOURS))
    return SignClip(
        name,
        rng.choice(FPS_CHOICES),
        duration,
        width,
        height,
        colour,
        rng.choice(SIDES),
        start,
        round(start + shown, 2),
        rng.randrange(2**31),
    )


def render_frame(clip: SignClip, index: int, noise: np.random.Generator) -> np.ndarray:
    """One (H, W, 3) uint8 frame: road, scrolling stripes, and the sign while it is shown."""
    h, w, t = clip.height, clip.width, index / clip.fps
    frame = np.empty((h, w, 3), np.uint8)
    frame[: h // 3] = (150, 190, 230)  # sky
    frame[h // 3 :] = (90, 90, 95)  # road
    ys = np.arange(h)[:, None]
    stripe = ((ys + int(t * 40)) // 12) % 2 == 0
    centre = (np.abs(np.arange(w)[None, :] - w // 2) < max(1, w // 80)) & stripe & (ys >= h // 3)
    frame[centre] = (240, 240, 240)
    frame[:] = np.clip(frame.astype(np.int16) + noise.integers(-12, 13, (h, w, 1)), 0, 255).astype(np.uint8)
    if clip.start_s <= t < clip.end_s:
        # Inside the central h x h square, which survives the encoder's center crop of wide frames.
        cx = w // 2 + (-1 if clip.side == SIDES[0] else 1) * int(0.25 * h)
        cy, r = int(0.42 * h), int(0.16 * h)
        disc = (np.arange(w)[None, :] - cx) ** 2 + (ys - cy) ** 2 <= r * r
        frame[disc] = COLOURS[clip.colour]
    return frame


def write_video(path: Path, clip: SignClip, keyframe_every: int | None = None) -> None:
    """Encode the clip as H.264 in an MP4 with PyAV, a keyframe every `keyframe_every` frames (default:
    each second, as cameras do)."""
    import av  # only generating videos needs PyAV

    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(clip.seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=clip.fps)
        stream.width, stream.height, stream.pix_fmt = clip.width, clip.height, "yuv420p"
        # Generated data must be the same every time its seed is. One thread was not enough: x264's rate
        # control with its lookahead still gave different bytes for the same frames (measured: 4 encodes of
        # one clip in one process, 4 different files; two demo generations differed in 108 of 120 clips).
        # A constant quantizer has no rate control: the same frames give the same bytes.
        stream.options = {
            "g": str(keyframe_every or clip.fps),
            "preset": "veryfast",
            "threads": "1",
            "qp": "23",
        }
        for index in range(round(clip.duration_s * clip.fps)):
            frame = av.VideoFrame.from_ndarray(render_frame(clip, index, noise), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def describe(clip: SignClip) -> str:
    """The open family's answer: "Biển báo màu đỏ, bên trái." """
    return f"Biển báo màu {clip.colour.lower()}, {clip.side.lower()}."


def make_questions(clip: SignClip, rng: random.Random, video_path: str, family: str = "visual") -> list[dict]:
    """RoadBuddy-style rows for one clip in `family` (see the module's docstring)."""
    three = clip.colour in QUESTION_TYPES["colour3"][1] and rng.random() < 0.5
    shown = clip.end_s - clip.start_s
    evidence = {
        "support_frames": [round(clip.start_s + shown * 0.3, 3), round(clip.start_s + shown * 0.7, 3)],
        "spans": [[clip.start_s, clip.end_s]],
        "video_path": video_path,
    }
    rows = []
    for qtype in ("colour3" if three else "colour4", "side")[: 1 if family == "open" else 2]:
        question, options, attribute = QUESTION_TYPES[qtype]
        options = list(options)
        if family == "binding":
            rng.shuffle(options)
        choices = [f"{chr(65 + i)}. {text}" for i, text in enumerate(options)]
        answer = choices[options.index(getattr(clip, attribute))]
        rows.append(
            {
                "id": f"{clip.name}_{qtype}",
                "question": question,
                "choices": choices,
                "answer": answer,
                **evidence,
                "_type": qtype,
            }
        )
    if family == "open":
        rows.append(
            {
                "id": f"{clip.name}_describe",
                "kind": "open",
                "question": DESCRIBE,
                "answer": describe(clip),
                **evidence,
                "_type": "describe",
            }
        )
        located = {k: v for k, v in evidence.items() if k != "support_frames"}
        rows.append(
            {
                "id": f"{clip.name}_locate",
                "kind": "grounding",
                "question": LOCATE,
                **located,
                "_type": "locate",
            }
        )
    return rows


def generate(
    out_dir: Path,
    num_videos: int,
    seed: int = 0,
    family: str = "visual",
    min_s: float = 4.0,
    max_s: float = 10.0,
) -> list[dict]:
    """Write `out_dir/videos/*.mp4`, `out_dir/clips.jsonl` and return the question rows (not yet split)."""
    rng = random.Random(seed)
    rows, clips = [], []
    for i in range(num_videos):
        clip = random_clip(rng, f"clip_{i:04d}", min_s, max_s)
        write_video(out_dir / "videos" / f"{clip.name}.mp4", clip)
        clips.append(asdict(clip))
        rows += make_questions(clip, rng, f"videos/{clip.name}.mp4", family)
    (out_dir / "clips.jsonl").write_text(
        "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in clips), "utf-8"
    )
    return rows


def write_roadbuddy(path: Path, rows: list[dict], with_answers: bool = True) -> None:
    """Write rows in RoadBuddy's JSON shape; without answers it is a public-test style file."""
    keep = (
        ("id", "kind", "question", "choices", "answer", "support_frames", "spans", "video_path")
        if with_answers
        else ("id", "kind", "question", "choices", "video_path")
    )
    data = [{k: r[k] for k in keep if k in r} for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"__count__": len(data), "data": data}, ensure_ascii=False, indent=1), "utf-8")
