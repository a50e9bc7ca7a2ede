"""Generated driving-like clips with a known "sign" event, and RoadBuddy-format questions about them.

Every clip shows a road with lane stripes scrolling towards the viewer; a coloured disc (the sign) appears
on the left or right side during a known interval. Questions ask what is seen (colour, side), so the answer,
its support frames (seconds inside the interval) and its span (the interval) are known exactly. Seeded: the
same seed gives the same videos and annotations.

Families: visual (colour and side, choices in a fixed order), binding (the same, choices shuffled), open
(a free description "Biển báo màu đỏ, bên trái.", a colour question, and a grounding query with only a span),
and the where-and-when families: side (colour, and the side with shuffled choices), when (colour, and in
which third of the clip the sign appeared), order (two signs of different colours: which came first, which
last) and count (one to three signs: how many). Every row carries its question `type`.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
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
WHEN = ("Biển báo xuất hiện ở phần nào của video?", ["Đầu video", "Giữa video", "Cuối video"])
ORDER = {"first": "Biển báo màu nào xuất hiện trước?", "last": "Biển báo màu nào xuất hiện sau?"}
COUNT = ("Có bao nhiêu biển báo xuất hiện trong video?", ["Một", "Hai", "Ba"])
FAMILIES = ("visual", "binding", "open", "side", "when", "order", "count")
TIMED_FAMILIES = ("when", "order", "count")  # clips of 6-10 s whose signs are placed in time
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
    later: list[tuple[str, str, float, float]] = field(
        default_factory=list
    )  # more signs: colour, side, start, end

    @property
    def signs(self) -> list[tuple[str, str, float, float]]:
        """Every sign as (colour, side, start_s, end_s), in the order they appear."""
        return [(self.colour, self.side, self.start_s, self.end_s), *self.later]


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
    cy, r = int(0.42 * h), int(0.16 * h)
    for colour, side, start, end in clip.signs:
        if start <= t < end:
            # Inside the central h x h square, which survives the encoder's center crop of wide frames.
            cx = w // 2 + (-1 if side == SIDES[0] else 1) * int(0.25 * h)
            disc = (np.arange(w)[None, :] - cx) ** 2 + (ys - cy) ** 2 <= r * r
            frame[disc] = COLOURS[colour]
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


def timed_clip(rng: random.Random, name: str, family: str) -> SignClip:
    """A 6-10 s clip for the when (one sign inside one third), order (two signs of different colours) or
    count (one to three signs) family; signs never overlap and are at least 0.8 s apart."""
    duration = round(rng.uniform(6.0, 10.0), 2)
    width, height = rng.choice(SIZE_CHOICES)
    fps, seed = rng.choice(FPS_CHOICES), rng.randrange(2**31)
    if family == "when":
        third = duration / 3
        shown = round(rng.uniform(1.0, min(1.8, third - 0.8)), 2)
        part = rng.randrange(3)
        start = round(rng.uniform(part * third + 0.4, (part + 1) * third - shown - 0.4), 2)
        signs = [(rng.choice(list(COLOURS)), rng.choice(SIDES), start, round(start + shown, 2))]
    else:
        count = 2 if family == "order" else rng.randint(1, 3)
        colours = (
            rng.sample(list(COLOURS), count)
            if family == "order"
            else [rng.choice(list(COLOURS)) for _ in range(count)]
        )
        shown = [round(rng.uniform(1.0, 1.5), 2) for _ in range(count)]
        duration = max(duration, round(sum(shown) + 0.8 * (count + 1) + 0.5, 2))  # room for every sign
        spare = duration - sum(shown) - 0.8 * (count + 1)  # beyond the least gaps, shared out at random
        cuts = sorted(rng.uniform(0, spare) for _ in range(count))
        signs, at = [], 0.8
        for k in range(count):
            start = round(at + cuts[k] - (cuts[k - 1] if k else 0.0), 2)
            signs.append((colours[k], rng.choice(SIDES), start, round(start + shown[k], 2)))
            at = signs[-1][3] + 0.8
    (colour, side, start, end), *later = signs
    return SignClip(name, fps, duration, width, height, colour, side, start, end, seed, later)


def _evidence(clip: SignClip, video_path: str) -> dict:
    """Support frames inside every sign (30% and 70% of the way through) and every sign's span."""
    frames = [round(a + (b - a) * f, 3) for _, _, a, b in clip.signs for f in (0.3, 0.7)]
    spans = [[a, b] for _, _, a, b in clip.signs]
    return {"support_frames": frames, "spans": spans, "video_path": video_path}


def _choice_row(
    clip: SignClip, qtype: str, question: str, options: list[str], answer: str, evidence: dict, name: str
) -> dict:
    choices = [f"{chr(65 + i)}. {text}" for i, text in enumerate(options)]
    return {
        "id": f"{clip.name}_{name}",
        "type": qtype,
        "question": question,
        "choices": choices,
        "answer": choices[options.index(answer)],
        **evidence,
    }


def make_questions(clip: SignClip, rng: random.Random, video_path: str, family: str = "visual") -> list[dict]:
    """RoadBuddy-style rows for one clip in `family` (see the module's docstring)."""
    evidence = _evidence(clip, video_path)
    if family in ("order", "count"):
        return _timed_questions(clip, rng, family, evidence)
    three = clip.colour in QUESTION_TYPES["colour3"][1] and rng.random() < 0.5
    rows = []
    for qtype in ("colour3" if three else "colour4", "when" if family == "when" else "side"):
        if qtype == "when":
            third = int(3 * (clip.start_s + clip.end_s) / 2 / clip.duration_s)
            rows.append(_choice_row(clip, "when", WHEN[0], WHEN[1], WHEN[1][third], evidence, qtype))
            continue
        question, options, attribute = QUESTION_TYPES[qtype]
        options = list(options)
        if family == "binding" or (family == "side" and qtype == "side"):
            rng.shuffle(options)
        kind = qtype.rstrip("34")  # colour3, colour4 → colour
        rows.append(_choice_row(clip, kind, question, options, getattr(clip, attribute), evidence, qtype))
    if family == "open":
        rows = rows[:1]  # the colour question; the description names the side
        rows.append(
            {
                "id": f"{clip.name}_describe",
                "kind": "open",
                "type": "describe",
                "question": DESCRIBE,
                "answer": describe(clip),
                **evidence,
            }
        )
        located = {k: v for k, v in evidence.items() if k != "support_frames"}
        rows.append(
            {
                "id": f"{clip.name}_locate",
                "kind": "grounding",
                "type": "locate",
                "question": LOCATE,
                **located,
            }
        )
    return rows


def _timed_questions(clip: SignClip, rng: random.Random, family: str, evidence: dict) -> list[dict]:
    if family == "count":
        answer = COUNT[1][len(clip.signs) - 1]
        return [_choice_row(clip, "count", COUNT[0], COUNT[1], answer, evidence, "count")]
    rows = []
    for which, sign in (("first", clip.signs[0]), ("last", clip.signs[-1])):
        options = [colour for colour, *_ in clip.signs]
        rng.shuffle(options)  # the choices' order never tells which came first
        rows.append(_choice_row(clip, "order", ORDER[which], options, sign[0], evidence, f"order_{which}"))
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
        name = f"clip_{i:04d}"
        clip = (
            timed_clip(rng, name, family)
            if family in TIMED_FAMILIES
            else random_clip(rng, name, min_s, max_s)
        )
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
        ("id", "kind", "type", "question", "choices", "answer", "support_frames", "spans", "video_path")
        if with_answers
        else ("id", "kind", "type", "question", "choices", "video_path")
    )
    data = [{k: r[k] for k in keep if k in r} for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"__count__": len(data), "data": data}, ensure_ascii=False, indent=1), "utf-8")
