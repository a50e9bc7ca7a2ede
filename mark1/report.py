"""The eval report: one self-contained HTML page of an eval's metrics and its worst questions.

Nothing on the page reaches the network or runs code: CSS inline, timelines as inline SVG, frames as
base64 JPEG data URIs (encoded by PyAV, already a dependency), no JavaScript. Questions, choices and
answers come from annotation files, so every text goes through `html.escape` on its way in: `_fill`
escapes each value unless it is a fragment this module built (`_Html`).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from string import Template

import numpy as np

from mark1.annotations import QARecord, load_annotations
from mark1.errors import VideoError
from mark1.files import write_atomic
from mark1.metrics import abs_error, best_iou, top_moment
from mark1.prompt import LETTERS
from mark1.video import frames_at

log = logging.getLogger(__name__)
REPORT_WORST = 12  # questions shown with their timeline and frames
THUMB_WIDTH = 320  # pixels of each frame shown

# metrics.json's keys as the page names them; a key missing here shows as itself
METRIC_NAMES = {
    "questions": "questions",
    "answered": "questions with an answer",
    "answer_score": "answered right (multiple choice and open)",
    "accuracy": "accuracy, multiple choice",
    "open_questions": "open questions",
    "exact_match": "exact match, open",
    "f1": "token F1, open",
    "grounded_questions": "questions with support frames",
    "hit@1_1s": "top moment within 1 s of a support frame",
    "hit@1_0.5s": "top moment within 0.5 s of a support frame",
    "top_moment_mae_s": "top moment's distance to the nearest support frame (s)",
    "precision_1s": "saliency peaks' precision at 1 s",
    "recall_1s": "saliency peaks' recall at 1 s",
    "f1_1s": "saliency peaks' F1 at 1 s",
    "grounded_accuracy": "right answer and top moment within 1 s",
    "span_questions": "questions with spans",
    "R@1_iou0.3": "saliency window R@1, IoU 0.3",
    "R@1_iou0.5": "saliency window R@1, IoU 0.5",
    "R@1_iou0.7": "saliency window R@1, IoU 0.7",
    "mIoU": "saliency window mIoU",
    "span_R@1_iou0.3": "span head R@1, IoU 0.3",
    "span_R@1_iou0.5": "span head R@1, IoU 0.5",
    "span_R@1_iou0.7": "span head R@1, IoU 0.7",
    "span_mIoU": "span head mIoU",
    "span_mAP": "span head mAP, IoU 0.5:0.95",
    "span_mAP@0.5": "span head mAP, IoU 0.5",
    "span_mAP@0.75": "span head mAP, IoU 0.75",
}


class _Html(str):
    """A fragment this module built from escaped parts: `_fill` inserts it as it is."""


def _fill(template: Template, **values: object) -> _Html:
    """`template` with every value escaped, except fragments built here."""
    return _Html(
        template.substitute(
            {k: v if isinstance(v, _Html) else html.escape(str(v), quote=True) for k, v in values.items()}
        )
    )


def _join(parts: Sequence[_Html]) -> _Html:
    return _Html("".join(parts))


@dataclass
class ReportResult:
    path: Path
    num_listed: int  # questions shown with a timeline
    num_frames: int  # frames embedded
    missing_videos: list[str]  # videos of listed questions that were not found or could not be decoded


def load_eval(out_dir: Path) -> tuple[dict, list[dict]]:
    """metrics.json and predictions.jsonl of an `eval --out` directory, to report on afterwards."""
    metrics = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    lines = (out_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return metrics, [json.loads(line) for line in lines if line.strip()]


def write_report(
    path: Path,
    metrics: dict,
    rows: list[dict],
    annotations: Path,
    records: list[QARecord] | None = None,
    videos: Path | None = None,
    worst: int = REPORT_WORST,
    title: str | None = None,
) -> ReportResult:
    """The page for one eval (its `metrics` and prediction `rows`), written atomically to `path`.

    `records` are the annotation file's questions (read from `annotations` when not given); a video is found
    under `videos` by its cache key or its annotation path, else by its annotation path resolved against
    the annotation file's directory."""
    if records is None:
        records, _ = load_annotations(annotations)
    by_id = {r.id: r for r in records}
    listed = sorted(rows, key=_trouble)[: max(0, worst)]
    frames, missing = _thumbnails(listed, by_id, annotations, videos)
    sections = [_question(i + 1, row, by_id.get(row["id"]), frames, missing) for i, row in enumerate(listed)]
    page = _fill(
        PAGE,
        title=title or f"Mark-1 eval: {annotations.name}",
        css=_Html(CSS),
        source=str(annotations),
        metrics=_metrics_table(metrics),
        breakdown=_breakdown(metrics, rows),
        confusion=_confusion(rows),
        num_listed=len(listed),
        num_rows=len(rows),
        questions=_join(sections) or _Html("<p>No question to list.</p>"),
    )
    write_atomic(path, page.encode("utf-8"))
    if missing:  # the page says so beside each question; the log says it once
        log.warning(
            "%s: no frames for %d video(s), e.g. %s", path, len(missing), next(iter(missing.values()))
        )
    return ReportResult(path, len(listed), len(frames), sorted(missing))


# ---- ranking ------------------------------------------------------------------------------------------


def _trouble(row: dict) -> tuple[bool, float]:
    """Sort key, worst first: wrong before right, then the least belief in the gold answer (a multiple-choice
    question's probability of it, an open one's F1); rows without an answer by their moment or window."""
    if row.get("kind", "choice") == "choice" and row.get("answer") is not None:
        return row["pred"] == row["answer"], row["probs"][row["answer"]]
    if row.get("kind") == "open" and row.get("answer") is not None:
        return bool(row.get("exact_match")), float(row.get("f1", 0.0))
    if row.get("support_frames"):
        error = abs_error(top_moment(row["saliency"], row["times"]), row["support_frames"])
        return error <= 1.0, 1.0 / (1.0 + error)
    if row.get("spans") and row.get("windows"):
        overlap = best_iou(row["windows"][0][:2], row["spans"])
        return overlap >= 0.5, overlap
    return True, 1.0


def _verdict(row: dict) -> tuple[str, str]:
    """(css class, words) of a row's outcome."""
    right, _ = _trouble(row)
    if row.get("answer") is None and not row.get("support_frames") and not row.get("spans"):
        return "none", "nothing to score"
    return ("right", "right") if right else ("wrong", "wrong")


# ---- tables -------------------------------------------------------------------------------------------


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _metrics_table(metrics: dict) -> _Html:
    lines = [
        _fill(METRIC_ROW, name=METRIC_NAMES.get(key, key), key=key, value=_number(value))
        for key, value in metrics.items()
        if not isinstance(value, dict) and key != "predictions_sha256"
    ]
    note = metrics.get("predictions_sha256")
    footer = (
        _fill(Template('<p class="note">predictions.jsonl sha256 $sha</p>'), sha=note) if note else _Html("")
    )
    head = _Html("<th>metric</th><th>value</th><th>key</th>")
    return _join([_fill(TABLE, head=head, body=_join(lines)), footer])


def _breakdown(metrics: dict, rows: list[dict]) -> _Html:
    """Accuracy per question type and per number of choices, with how many questions each holds."""
    answered = [r for r in rows if r.get("answer") is not None]
    by_type = Counter(r["type"] for r in answered if r.get("type"))
    by_choices = Counter(
        str(len(r["probs"])) for r in answered if r.get("kind", "choice") == "choice" and r.get("probs")
    )
    parts = []
    for heading, values, counts in (
        ("Accuracy per question type", metrics.get("accuracy_by_type"), by_type),
        ("Accuracy per number of choices", metrics.get("accuracy_by_num_choices"), by_choices),
    ):
        if not values:
            continue
        lines = [
            _fill(
                BAR_ROW,
                name=name,
                count=counts.get(name, 0),
                value=_number(float(value)),
                width=f"{100 * float(value):.1f}",
            )
            for name, value in values.items()
        ]
        head = _Html("<th>group</th><th>questions</th><th>accuracy</th><th></th>")
        parts.append(_fill(SECTION, heading=heading, body=_fill(TABLE, head=head, body=_join(lines))))
    return _join(parts)


def _confusion(rows: list[dict]) -> _Html:
    """Gold letter (rows) x predicted letter (columns) over the multiple-choice questions with an answer."""
    pairs = Counter(
        (LETTERS[r["answer"]], r["letter"])
        for r in rows
        if r.get("kind", "choice") == "choice" and r.get("answer") is not None
    )
    if not pairs:
        return _Html("")
    letters = LETTERS[: max(LETTERS.index(letter) for pair in pairs for letter in pair) + 1]
    totals = defaultdict(int)
    for (gold, _), n in pairs.items():
        totals[gold] += n
    head = _Html("<th>gold \\ predicted</th>" + "".join(f"<th>{letter}</th>" for letter in letters))
    lines = []
    for gold in letters:
        cells = []
        for pred in letters:
            n = pairs.get((gold, pred), 0)
            share = n / totals[gold] if totals[gold] else 0.0
            kind = "diag" if gold == pred else "off"
            cells.append(_fill(CELL, kind=kind, alpha=f"{0.08 + 0.6 * share:.2f}" if n else "0", n=n))
        lines.append(_Html(f"<tr><th>{gold}</th>{''.join(cells)}</tr>"))
    table = _fill(
        Template('<table class="confusion"><thead><tr>$head</tr></thead><tbody>$body</tbody></table>'),
        head=head,
        body=_join(lines),
    )
    note = _Html('<p class="note">Questions by gold letter (rows) and predicted letter (columns).</p>')
    return _fill(SECTION, heading="Confusion, multiple choice", body=_join([table, note]))


# ---- one question -------------------------------------------------------------------------------------


def _moments(row: dict) -> tuple[float, tuple[str, float] | None]:
    """The predicted moment, and the frame to set beside it: the support frame nearest it, else the centre
    of the first ground-truth span."""
    predicted = top_moment(row["saliency"], row["times"])
    if row.get("support_frames"):
        nearest = min(row["support_frames"], key=lambda t: abs(t - predicted))
        return predicted, ("support frame", float(nearest))
    if row.get("spans"):
        start, end = row["spans"][0]
        return predicted, ("ground-truth span's centre", (start + end) / 2)
    return predicted, None


def _question(rank: int, row: dict, record: QARecord | None, frames: dict, missing: dict) -> _Html:
    css, words = _verdict(row)
    predicted, reference = _moments(row)
    video = row.get("video", "")
    figures = [_figure(frames.get((video, round(predicted, 3))), f"predicted moment, {predicted:.2f} s")]
    if reference is not None:
        label, at = reference
        figures.append(_figure(frames.get((video, round(at, 3))), f"{label}, {at:.2f} s"))
    else:
        figures.append(_Html('<p class="note">No support frame or span in the annotation.</p>'))
    note = ""
    if video in missing:
        note = _fill(Template('<p class="missing">Frames not shown: $why</p>'), why=missing[video])
    return _fill(
        QUESTION,
        rank=rank,
        css=css,
        verdict=words,
        qid=row["id"],
        video=video,
        kind=row.get("kind", "choice"),
        qtype=row.get("type") or "-",
        question=record.question if record else "(question not in the annotation file)",
        answer=_answer_block(row, record),
        timeline=_timeline(row, predicted),
        frames=_join(figures) if video not in missing else _Html(""),
        missing=note,
    )


def _answer_block(row: dict, record: QARecord | None) -> _Html:
    if row.get("kind", "choice") == "choice" and row.get("probs"):
        items = []
        for i, p in enumerate(row["probs"]):
            text = record.choices[i] if record and i < len(record.choices) else LETTERS[i]
            marks = " ".join(
                m for m, on in (("gold", i == row.get("answer")), ("predicted", i == row["pred"])) if on
            )
            items.append(_fill(CHOICE, marks=marks, text=text, p=f"{p:.3f}", width=f"{100 * p:.1f}"))
        return _fill(Template('<ol class="choices">$items</ol>'), items=_join(items))
    if row.get("kind") == "open":
        f1 = row.get("f1")
        return _fill(
            OPEN,
            text=row.get("text", ""),
            answer=row.get("answer") or "-",
            f1="-" if f1 is None else f"{f1:.2f}",
        )
    spans = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in row.get("spans", []))
    return _fill(
        Template('<p class="answer">Grounding query; ground-truth spans: $spans</p>'), spans=spans or "-"
    )


# ---- the timeline -------------------------------------------------------------------------------------

SVG_W, SVG_H = 720, 180
PAD_L, PAD_R, PAD_T, PAD_B = 40, 16, 14, 30


def _ticks(end_s: float) -> list[float]:
    """Round seconds for the time axis, about six of them."""
    step = next(s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1e9) if end_s / s <= 8)
    return [round(i * step, 3) for i in range(int(end_s / step) + 1)]


def _timeline(row: dict, predicted: float) -> _Html:
    """Saliency over the clip's seconds: the curve and its positions, support frames (orange, dashed),
    ground-truth spans (blue band), the span head's top window (green) and the predicted moment (red)."""
    times, saliency = row["times"], row["saliency"]
    end_s = max(float(row.get("duration_s") or 0.0), max(times, default=0.0), 1e-3)
    width, height = SVG_W - PAD_L - PAD_R, SVG_H - PAD_T - PAD_B

    def x(t: float) -> float:
        return PAD_L + width * min(max(t, 0.0), end_s) / end_s

    def y(s: float) -> float:
        return PAD_T + height * (1.0 - min(max(s, 0.0), 1.0))

    parts = [f'<rect class="plot" x="{PAD_L}" y="{PAD_T}" width="{width}" height="{height}"/>']
    for level in (0.0, 0.5, 1.0):
        parts.append(
            f'<line class="grid" x1="{PAD_L}" x2="{PAD_L + width}" y1="{y(level):.1f}" y2="{y(level):.1f}"/>'
        )
        parts.append(
            f'<text class="tick" x="{PAD_L - 6}" y="{y(level) + 4:.1f}" text-anchor="end">{level:g}</text>'
        )
    for t in _ticks(end_s):
        parts.append(
            f'<line class="grid" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{PAD_T + height}" y2="{PAD_T + height + 4}"/>'
        )
        parts.append(
            f'<text class="tick" x="{x(t):.1f}" y="{PAD_T + height + 16}" text-anchor="middle">{t:g}</text>'
        )
    parts.append(f'<text class="tick" x="{PAD_L + width}" y="{SVG_H - 2}" text-anchor="end">seconds</text>')
    for start, end in row.get("spans", []):
        parts.append(
            f'<rect class="gt-span" x="{x(start):.1f}" y="{PAD_T}" width="{max(x(end) - x(start), 1):.1f}" height="{height}"/>'
        )
    if row.get("windows"):
        start, end, score = row["windows"][0]
        parts.append(
            f'<rect class="window" x="{x(start):.1f}" y="{PAD_T}" width="{max(x(end) - x(start), 1):.1f}" height="{height}">'
            f"<title>span head's top window {start:.2f}-{end:.2f} s, confidence {score:.2f}</title></rect>"
        )
    for t in row.get("support_frames", []):
        parts.append(
            f'<line class="support" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{PAD_T}" y2="{PAD_T + height}"/>'
        )
    points = " ".join(f"{x(t):.1f},{y(s):.1f}" for t, s in zip(times, saliency, strict=True))
    parts.append(f'<polyline class="curve" points="{points}"/>')
    parts += [
        f'<circle class="dot" cx="{x(t):.1f}" cy="{y(s):.1f}" r="3"/>'
        for t, s in zip(times, saliency, strict=True)
    ]
    top = float(np.max(saliency)) if saliency else 0.0
    parts.append(
        f'<line class="predicted" x1="{x(predicted):.1f}" x2="{x(predicted):.1f}" y1="{PAD_T}" y2="{PAD_T + height}"/>'
    )
    parts.append(f'<circle class="peak" cx="{x(predicted):.1f}" cy="{y(top):.1f}" r="5"/>')
    label = f"saliency of {row['id']} over {end_s:.1f} s; predicted moment {predicted:.2f} s"
    return _fill(SVG, w=SVG_W, h=SVG_H, label=label, body=_Html("".join(parts)))


# ---- frames -------------------------------------------------------------------------------------------


def _find_video(record: QARecord | None, key: str, annotations: Path, videos: Path | None) -> list[Path]:
    """Where the video may be, in order: under `videos` by cache key or annotation path, else the
    annotation path against the annotation file's directory."""
    written = record.video if record else key
    if videos is not None:
        return [videos / key, videos / written, videos / Path(written).name]
    return [annotations.parent / written]


def _thumbnails(
    rows: list[dict], by_id: dict[str, QARecord], annotations: Path, videos: Path | None
) -> tuple[dict[tuple[str, float], str], dict[str, str]]:
    """Data URIs of the frames the listed rows show, by (video key, time), each video decoded once; and why
    a video's frames are missing."""
    wanted: dict[str, set[float]] = defaultdict(set)
    paths: dict[str, list[Path]] = {}
    for row in rows:
        predicted, reference = _moments(row)
        wanted[row["video"]] |= {round(predicted, 3)} | ({round(reference[1], 3)} if reference else set())
        paths.setdefault(row["video"], _find_video(by_id.get(row["id"]), row["video"], annotations, videos))
    frames, missing = {}, {}
    for key, times in wanted.items():
        found = next((p for p in paths[key] if p.is_file()), None)
        if found is None:
            tried = ", ".join(str(p) for p in paths[key])
            missing[key] = f"video not found (looked for {tried}); give its folder with --videos"
            continue
        ordered = sorted(times)
        try:
            pictures = frames_at(found, ordered)
        except VideoError as err:
            missing[key] = str(err)
            continue
        for t, picture in zip(ordered, pictures, strict=True):
            frames[(key, t)] = "data:image/jpeg;base64," + base64.b64encode(_jpeg(picture)).decode("ascii")
    return frames, missing


def _jpeg(rgb: np.ndarray, width: int = THUMB_WIDTH) -> bytes:
    """A small JPEG of an (H, W, 3) uint8 frame, `width` pixels wide (never enlarged), through PyAV."""
    import av

    height_in, width_in = rgb.shape[:2]
    out_w = min(width, width_in) // 2 * 2  # 4:2:0 chroma wants even sides
    out_h = max(2, round(height_in * out_w / width_in) // 2 * 2)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame = frame.reformat(width=out_w, height=out_h, format="yuvj420p", interpolation="AREA")
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt, codec.time_base = out_w, out_h, "yuvj420p", Fraction(1, 1)
    return b"".join(bytes(p) for p in [*codec.encode(frame), *codec.encode(None)])


def _figure(uri: str | None, caption: str) -> _Html:
    if uri is None:
        return _fill(
            Template(
                '<figure class="frame"><div class="noframe">no frame</div><figcaption>$caption</figcaption></figure>'
            ),
            caption=caption,
        )
    return _fill(FIGURE, uri=uri, caption=caption)


# ---- templates ----------------------------------------------------------------------------------------

TABLE = Template("<table><thead><tr>$head</tr></thead><tbody>$body</tbody></table>")
SECTION = Template('<section class="block"><h2>$heading</h2>$body</section>')
METRIC_ROW = Template('<tr><td>$name</td><td class="num">$value</td><td class="key">$key</td></tr>')
BAR_ROW = Template(
    '<tr><td>$name</td><td class="num">$count</td><td class="num">$value</td>'
    '<td class="barcell"><div class="bar" style="width:$width%"></div></td></tr>'
)
CELL = Template('<td class="num $kind" style="--alpha:$alpha">$n</td>')
CHOICE = Template(
    '<li class="$marks"><span class="ctext">$text</span><span class="prob">$p</span>'
    '<span class="pbar"><span style="width:$width%"></span></span></li>'
)
OPEN = Template(
    '<dl class="open"><dt>predicted</dt><dd>$text</dd><dt>answer</dt><dd>$answer</dd><dt>F1</dt><dd>$f1</dd></dl>'
)
FIGURE = Template(
    '<figure class="frame"><img src="$uri" alt="$caption"><figcaption>$caption</figcaption></figure>'
)
SVG = Template(
    '<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 $w $h" role="img" '
    'aria-label="$label"><title>$label</title>$body</svg>'
)
QUESTION = Template(
    """<section class="question $css" id="q$rank">
<h3><span class="rank">#$rank</span> <span class="badge $css">$verdict</span> <code>$qid</code>
<span class="meta">$kind · type $qtype · $video</span></h3>
<p class="qtext">$question</p>
$answer
<div class="timeline-box">$timeline</div>
$missing<div class="frames">$frames</div>
</section>
"""
)
PAGE = Template(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$css</style></head>
<body><main>
<h1>$title</h1>
<p class="note">Annotations: $source</p>
<section class="block"><h2>Metrics</h2>$metrics</section>
$breakdown
$confusion
<section class="block"><h2>Worst questions</h2>
<p class="note">$num_listed of $num_rows questions, wrong ones first, then by the probability given to the gold
answer (F1 for open answers).</p>
<p class="legend"><span class="sw curve"></span>saliency <span class="sw predicted"></span>predicted moment
<span class="sw support"></span>support frame <span class="sw window"></span>span head's top window
<span class="sw gt"></span>ground-truth span</p>
$questions
</section>
</main></body></html>
"""
)
CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f7f8fa;--card:#fff;--red:#d92d20;--green:#12b76a;
--blue:#2e90fa;--orange:#f79009}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1080px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 10px}h3{font-size:15px;margin:0 0 6px}
.block,.question{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px;margin:16px 0}
.question{border-left:4px solid var(--line)}.question.wrong{border-left-color:var(--red)}
.question.right{border-left-color:var(--green)}
table{border-collapse:collapse;width:100%}th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left}
th{font-weight:600;color:var(--muted);font-size:12px}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.key{color:var(--muted);font-family:ui-monospace,monospace;font-size:12px}
td.barcell{width:40%}.bar{height:10px;background:var(--blue);border-radius:5px}
table.confusion{width:auto}table.confusion td{min-width:56px}
td.diag{background:rgba(18,183,106,var(--alpha))}td.off{background:rgba(217,45,32,var(--alpha))}
.note{color:var(--muted);font-size:12px;margin:4px 0}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;color:#fff;background:var(--muted)}
.badge.wrong{background:var(--red)}.badge.right{background:var(--green)}
.rank{color:var(--muted)}.meta{color:var(--muted);font-weight:400;font-size:12px}
.qtext{font-size:15px;margin:6px 0}
.choices{margin:4px 0 8px;padding-left:20px}.choices li{margin:2px 0}
.choices li.gold .ctext{font-weight:600;color:#067647}.choices li.predicted .ctext{text-decoration:underline}
.choices li.predicted:not(.gold) .ctext{color:var(--red)}
.choices li.gold::after{content:" gold";color:#067647;font-size:11px}
.choices li.predicted::after{content:" predicted";color:var(--muted);font-size:11px}
.choices li.gold.predicted::after{content:" gold, predicted"}
.prob{display:inline-block;margin-left:10px;font-variant-numeric:tabular-nums;color:var(--muted)}
.pbar{display:inline-block;width:80px;height:6px;background:var(--line);margin-left:6px;border-radius:3px;vertical-align:middle}
.pbar span{display:block;height:6px;background:var(--blue);border-radius:3px}
dl.open{display:grid;grid-template-columns:90px 1fr;gap:2px 10px;margin:6px 0}dl.open dt{color:var(--muted)}dl.open dd{margin:0}
.timeline-box{margin:8px 0}svg.timeline{width:100%;height:auto;display:block}
svg .plot{fill:#fcfcfd;stroke:var(--line)}svg .grid{stroke:var(--line)}svg .tick{font-size:11px;fill:var(--muted)}
svg .curve{fill:none;stroke:var(--blue);stroke-width:2}svg .dot{fill:var(--blue)}
svg .support{stroke:var(--orange);stroke-width:2;stroke-dasharray:5 4}
svg .predicted{stroke:var(--red);stroke-width:2}svg .peak{fill:none;stroke:var(--red);stroke-width:2}
svg .window{fill:rgba(18,183,106,.18);stroke:rgba(18,183,106,.6)}svg .gt-span{fill:rgba(46,144,250,.12)}
.legend{font-size:12px;color:var(--muted)}.sw{display:inline-block;width:14px;height:10px;margin:0 4px 0 10px;vertical-align:middle}
.sw.curve{background:var(--blue)}.sw.predicted{background:var(--red)}
.sw.support{border-top:2px dashed var(--orange);height:0}.sw.window{background:rgba(18,183,106,.35)}
.sw.gt{background:rgba(46,144,250,.2)}
.frames{display:flex;gap:16px;flex-wrap:wrap}.frame{margin:0}
.frame img{display:block;width:320px;height:auto;border-radius:6px;border:1px solid var(--line)}
.frame figcaption{font-size:12px;color:var(--muted);margin-top:4px}
.noframe{width:320px;height:180px;display:flex;align-items:center;justify-content:center;background:var(--line);border-radius:6px;color:var(--muted)}
.missing{color:#b54708;background:#fffaeb;border:1px solid #fedf89;border-radius:6px;padding:6px 10px;font-size:13px}
"""
