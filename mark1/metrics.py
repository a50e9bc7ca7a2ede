"""Answer and temporal-grounding metrics: plain functions over saliency curves, times and support frames.

Span metrics follow Moment-DETR / UniVTG: R@1 at IoU thresholds takes the top-1 predicted window against
the best-overlapping ground-truth window; mIoU averages that IoU.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

HIT_TOLERANCES_S = (1.0, 0.5)
IOU_THRESHOLDS = (0.3, 0.5, 0.7)


def top_moment(saliency: Sequence[float], times: Sequence[float]) -> float:
    """Time of the most salient position (the first one on ties)."""
    return float(times[int(np.argmax(saliency))])


def moments(
    saliency: Sequence[float], times: Sequence[float], threshold: float = 0.5, k: int = 3
) -> list[tuple[float, float]]:
    """(time, score) of local peaks scoring >= threshold, best first, at most k; always at least the top one."""
    s = np.asarray(saliency, dtype=np.float64)
    padded = np.concatenate([[-np.inf], s, [-np.inf]])
    peaks = [i for i in range(len(s)) if padded[i + 1] >= padded[i] and padded[i + 1] > padded[i + 2]]
    chosen = [i for i in sorted(peaks, key=lambda i: -s[i]) if s[i] >= threshold][:k] or [int(np.argmax(s))]
    return [(float(times[i]), float(s[i])) for i in chosen]


def hit(moment_s: float, support_frames: Sequence[float], tolerance_s: float) -> bool:
    return any(abs(moment_s - t) <= tolerance_s for t in support_frames)


def abs_error(moment_s: float, support_frames: Sequence[float]) -> float:
    """Seconds from the moment to the nearest support frame."""
    return min(abs(moment_s - t) for t in support_frames)


def match_count(predicted: Sequence[float], support_frames: Sequence[float], tolerance_s: float) -> int:
    """One-to-one matches within tolerance, closest pairs first (greedy; exact on a line for a shared tolerance)."""
    pairs = sorted((abs(p - g), i, j) for i, p in enumerate(predicted) for j, g in enumerate(support_frames))
    used_p, used_g, matched = set(), set(), 0
    for distance, i, j in pairs:
        if distance <= tolerance_s and i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            matched += 1
    return matched


def position_windows(times: Sequence[float], duration_s: float) -> np.ndarray:
    """(T', 2) [start, end] of each temporal position: halfway to its neighbours, clipped to the clip."""
    t = np.asarray(times, dtype=np.float64)
    mids = (t[1:] + t[:-1]) / 2 if len(t) > 1 else np.array([])
    first = t[0] - (mids[0] - t[0] if len(mids) else 0.5)
    last = t[-1] + (t[-1] - mids[-1] if len(mids) else 0.5)
    edges = np.clip(np.concatenate([[first], mids, [last]]), 0.0, max(duration_s, float(t[-1])))
    return np.stack([edges[:-1], edges[1:]], axis=1)


def predicted_span(
    saliency: Sequence[float], times: Sequence[float], duration_s: float, threshold: float = 0.5
) -> tuple[float, float]:
    """The top position grown over contiguous neighbours scoring >= threshold, as a [start, end] window."""
    s = np.asarray(saliency)
    lo = hi = int(np.argmax(s))
    while lo > 0 and s[lo - 1] >= threshold:
        lo -= 1
    while hi < len(s) - 1 and s[hi + 1] >= threshold:
        hi += 1
    windows = position_windows(times, duration_s)
    return float(windows[lo, 0]), float(windows[hi, 1])


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def summarize(rows: list[dict]) -> dict:
    """Aggregate prediction rows (see stages.evaluate.score_records) into the metrics of `mark1 eval`."""
    answered = [r for r in rows if r.get("answer") is not None]
    metrics: dict = {"questions": len(rows), "answered": len(answered)}
    if answered:
        metrics["accuracy"] = float(np.mean([r["pred"] == r["answer"] for r in answered]))
        by_choices = defaultdict(list)
        for r in answered:
            by_choices[len(r["probs"])].append(r["pred"] == r["answer"])
        metrics["accuracy_by_num_choices"] = {
            str(n): float(np.mean(v)) for n, v in sorted(by_choices.items())
        }
    grounded = [r for r in rows if r.get("support_frames")]
    if grounded:
        metrics["grounded_questions"] = len(grounded)
        tops = [top_moment(r["saliency"], r["times"]) for r in grounded]
        for tol in HIT_TOLERANCES_S:
            metrics[f"hit@1_{tol:g}s"] = float(
                np.mean([hit(t, r["support_frames"], tol) for t, r in zip(tops, grounded, strict=True)])
            )
        metrics["top_moment_mae_s"] = float(
            np.mean([abs_error(t, r["support_frames"]) for t, r in zip(tops, grounded, strict=True)])
        )
        tp = n_pred = n_gt = 0
        for r in grounded:
            predicted = [m for m, _ in moments(r["saliency"], r["times"])]
            tp += match_count(predicted, r["support_frames"], 1.0)
            n_pred, n_gt = n_pred + len(predicted), n_gt + len(r["support_frames"])
        precision, recall = tp / n_pred, tp / n_gt
        metrics["precision_1s"], metrics["recall_1s"] = precision, recall
        metrics["f1_1s"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        with_answer = [(t, r) for t, r in zip(tops, grounded, strict=True) if r.get("answer") is not None]
        if with_answer:
            metrics["grounded_accuracy"] = float(
                np.mean(
                    [r["pred"] == r["answer"] and hit(t, r["support_frames"], 1.0) for t, r in with_answer]
                )
            )
    spanned = [r for r in rows if r.get("spans")]
    if spanned:
        ious = [
            max(iou(predicted_span(r["saliency"], r["times"], r["duration_s"]), gt) for gt in r["spans"])
            for r in spanned
        ]
        for threshold in IOU_THRESHOLDS:
            metrics[f"R@1_iou{threshold:g}"] = float(np.mean([v >= threshold for v in ious]))
        metrics["mIoU"] = float(np.mean(ious))
    return metrics
