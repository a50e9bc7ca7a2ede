"""Answer and temporal-grounding metrics: plain functions over prediction rows, saliency curves and windows.

Span metrics follow Moment-DETR's standalone evaluation: R@1 at an IoU threshold takes the top-1 predicted
window against the ground-truth window it overlaps best; mIoU averages that IoU; mAP ranks every predicted
window of a query by confidence, counts one as a true positive when it reaches the threshold with a
ground-truth window no better-ranked window took, takes the interpolated (VOC) average precision per query,
and averages over queries and over the thresholds 0.5, 0.55, ..., 0.95. Free-text answers are scored as
SQuAD scores them: exact match and token F1 after normalisation.
"""

from __future__ import annotations

import string
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

HIT_TOLERANCES_S = (1.0, 0.5)
IOU_THRESHOLDS = (0.3, 0.5, 0.7)
MAP_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5:0.95
MAX_WINDOWS = 10  # predicted windows per query that mAP ranks, as Moment-DETR's evaluation keeps


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation for any language: Unicode NFC, lower case, punctuation deleted (ASCII's and every
    Unicode punctuation character), spaces collapsed. SQuAD also drops English articles; these answers are
    Vietnamese, so nothing is dropped."""
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(
        c for c in text if not (c in string.punctuation or unicodedata.category(c).startswith("P"))
    )
    return " ".join(text.split())


def exact_match(predicted: str, truth: str) -> bool:
    return normalize_answer(predicted) == normalize_answer(truth)


def token_f1(predicted: str, truth: str) -> float:
    """SQuAD's token F1: the harmonic mean of precision and recall of the normalised words in common."""
    pred, gold = normalize_answer(predicted).split(), normalize_answer(truth).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


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


def best_iou(window: Sequence[float], truth: Sequence[Sequence[float]]) -> float:
    """IoU of a predicted window with the ground-truth window it overlaps best."""
    return max(iou(window, gt) for gt in truth)


def average_precision(
    windows: Sequence[Sequence[float]], truth: Sequence[Sequence[float]], threshold: float
) -> float:
    """One query's AP at an IoU threshold: windows [start, end, score] ranked by score; each takes the
    best-overlapping ground-truth window still free if it reaches the threshold (a true positive), else it
    is a false positive; precision made monotone from the right, summed over the recall steps (VOC)."""
    ranked = sorted(windows, key=lambda w: -w[2])[:MAX_WINDOWS]
    taken, hits = set(), []
    for window in ranked:
        overlaps = sorted(((iou(window, gt), j) for j, gt in enumerate(truth)), reverse=True)
        free = [j for value, j in overlaps if value >= threshold and j not in taken]
        if free:
            taken.add(free[0])
        hits.append(bool(free))
    if not ranked:
        return 0.0
    tp = np.cumsum(hits)
    precision = np.concatenate([[0.0], tp / np.arange(1, len(hits) + 1), [0.0]])
    recall = np.concatenate([[0.0], tp / len(truth), [1.0]])
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    steps = np.nonzero(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def span_metrics(rows: list[dict], prefix: str = "", with_map: bool = False) -> dict:
    """R@1 at IoU 0.3/0.5/0.7 and mIoU over rows with ground-truth `spans` and predicted `windows`, best
    first; `with_map`: also mAP, for windows [start, end, confidence]."""
    ious = [best_iou(r["windows"][0][:2], r["spans"]) for r in rows]
    metrics = {f"{prefix}R@1_iou{t:g}": float(np.mean([v >= t for v in ious])) for t in IOU_THRESHOLDS}
    metrics[f"{prefix}mIoU"] = float(np.mean(ious))
    if with_map:
        by_threshold = {
            t: np.mean([average_precision(r["windows"], r["spans"], t) for r in rows]) for t in MAP_THRESHOLDS
        }
        metrics[f"{prefix}mAP"] = float(np.mean(list(by_threshold.values())))
        metrics[f"{prefix}mAP@0.5"], metrics[f"{prefix}mAP@0.75"] = (
            float(by_threshold[0.5]),
            float(by_threshold[0.75]),
        )
    return metrics


def _is_choice(row: dict) -> bool:
    return row.get("kind", "choice") == "choice"  # predictions written before open questions have no kind


def _correct(row: dict) -> bool:
    return row["pred"] == row["answer"] if _is_choice(row) else row["exact_match"]


def flat_numbers(metrics: dict, sep: str = ".") -> dict[str, int | float]:
    """The numbers of a (nested) metrics dict under flat keys (`accuracy_by_num_choices.2`); strings (a
    sha256), booleans and None left out. The model card's table and the training curves read them so."""
    out: dict[str, int | float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update({f"{key}{sep}{k}": v for k, v in flat_numbers(value, sep).items()})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[str(key)] = value
    return out


def summarize(rows: list[dict]) -> dict:
    """Aggregate prediction rows (see stages.evaluate.score_records) into the metrics of `mark1 eval`."""
    answered = [r for r in rows if r.get("answer") is not None]
    metrics: dict = {"questions": len(rows), "answered": len(answered)}
    choice = [r for r in answered if _is_choice(r)]
    open_ = [r for r in answered if r.get("kind") == "open"]
    if answered:  # the share answered right, multiple choice and open alike: what best/ keeps
        metrics["answer_score"] = float(np.mean([_correct(r) for r in answered]))
    by_type = defaultdict(list)
    for r in answered:
        if r.get("type"):
            by_type[r["type"]].append(_correct(r))
    if by_type:  # right answers (choice or exact match) per question type: a regression in one shows
        metrics["accuracy_by_type"] = {t: float(np.mean(v)) for t, v in sorted(by_type.items())}
    if choice:
        metrics["accuracy"] = float(np.mean([_correct(r) for r in choice]))
        by_choices = defaultdict(list)
        for r in choice:
            by_choices[len(r["probs"])].append(_correct(r))
        metrics["accuracy_by_num_choices"] = {
            str(n): float(np.mean(v)) for n, v in sorted(by_choices.items())
        }
    if open_:
        metrics["open_questions"] = len(open_)
        metrics["exact_match"] = float(np.mean([r["exact_match"] for r in open_]))
        metrics["f1"] = float(np.mean([r["f1"] for r in open_]))
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
        with_answer = [
            (t, r)
            for t, r in zip(tops, grounded, strict=True)
            if _is_choice(r) and r.get("answer") is not None
        ]
        if with_answer:
            metrics["grounded_accuracy"] = float(
                np.mean(
                    [r["pred"] == r["answer"] and hit(t, r["support_frames"], 1.0) for t, r in with_answer]
                )
            )
    spanned = [r for r in rows if r.get("spans")]
    if spanned:
        metrics["span_questions"] = len(spanned)
        grown = [
            {**r, "windows": [predicted_span(r["saliency"], r["times"], r["duration_s"])]} for r in spanned
        ]
        metrics |= span_metrics(grown)  # the window grown from the saliency curve: R@1_iou0.5, mIoU
        if all(r.get("windows") for r in spanned):
            metrics |= span_metrics(spanned, "span_", with_map=True)  # the span head's windows
    return metrics
