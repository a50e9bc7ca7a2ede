"""The span head's geometry and loss: windows as (centre, width) fractions of the clip, matched one to one to
the ground-truth windows as Moment-DETR matches them (Hungarian, on the same cost as the loss), and trained
with L1 + generalized IoU on the matched pairs + a foreground loss on every predicted window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

BACKGROUND_WEIGHT = 0.1  # weight of an unmatched window's "background" target (Moment-DETR's eos_coef)


@dataclass(frozen=True)
class SpanWeights:
    l1: float = 10.0
    giou: float = 1.0
    foreground: float = 4.0


def to_start_end(windows: torch.Tensor) -> torch.Tensor:
    """(..., 2) (centre, width) → (..., 2) (start, end)."""
    centre, width = windows.unbind(-1)
    return torch.stack([centre - width / 2, centre + width / 2], dim=-1)


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 2) x (M, 2) windows as (start, end) → (N, M) generalized IoU: IoU minus the share of the
    enclosing window that neither covers, so that disjoint windows still get a gradient towards each other."""
    left, right = torch.max(a[:, None, 0], b[None, :, 0]), torch.min(a[:, None, 1], b[None, :, 1])
    inter = (right - left).clamp(min=0)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    iou = inter / union.clamp(min=1e-6)
    hull = torch.max(a[:, None, 1], b[None, :, 1]) - torch.min(a[:, None, 0], b[None, :, 0])
    return iou - (hull - union) / hull.clamp(min=1e-6)


def _match_cost(
    windows: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, w: SpanWeights
) -> torch.Tensor:
    """(Nq, G) cost of giving ground-truth window g to predicted window q."""
    l1 = torch.cdist(windows, targets, p=1)
    giou = generalized_iou(to_start_end(windows), to_start_end(targets))
    return w.l1 * l1 - w.giou * giou - w.foreground * torch.sigmoid(logits)[:, None]


def match(
    windows: torch.Tensor, logits: torch.Tensor, truths: list[torch.Tensor], w: SpanWeights
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each row's windows (Nq, 2), logits (Nq,) and ground truth (G, 2): indices (predicted, ground truth)
    of the one-to-one assignment of least total cost; every ground-truth window gets one predicted window
    when there are at least as many predicted. The cost matrices of all rows reach the CPU in one copy: the
    step waits on the GPU once, not once per row."""
    costs = [
        _match_cost(window.detach().float(), logit.detach().float(), truth.float(), w)
        for window, logit, truth in zip(windows, logits, truths, strict=True)
    ]
    flat = torch.cat([c.flatten() for c in costs]).cpu().split([c.numel() for c in costs])
    # Non-finite predictions (from damaged features) still get a matching: their loss is NaN and the
    # training step is skipped and counted.
    return [
        linear_sum_assignment(
            torch.nan_to_num(cost, nan=1e6, posinf=1e6, neginf=-1e6).view(-1, len(truth)).numpy()
        )
        for cost, truth in zip(flat, truths, strict=True)
    ]


def span_loss(
    windows: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, counts: torch.Tensor, w: SpanWeights
) -> torch.Tensor:
    """windows (B, Nq, 2) and logits (B, Nq) predicted; targets (B, G, 2) ground truth, the first counts[b]
    of row b real (`counts` on the CPU). Rows without ground truth are left out; with none at all the loss
    is zero through the head.

    L1 and 1 - gIoU average over the matched pairs; the foreground BCE over every predicted window of the
    rows with ground truth, an unmatched one's "background" target weighted BACKGROUND_WEIGHT.
    """
    rows = counts.nonzero().squeeze(1).tolist()
    if not rows:
        return (windows.sum() + logits.sum()) * 0.0
    truths = [targets[row, : counts[row]].to(windows.device, torch.float32) for row in rows]
    pairs_pred, pairs_true, foreground = [], [], torch.zeros_like(logits[rows], dtype=torch.float32)
    for i, (row, truth, (p, g)) in enumerate(
        zip(rows, truths, match(windows[rows], logits[rows], truths, w), strict=True)
    ):
        pairs_pred.append(windows[row, p])
        pairs_true.append(truth[g])
        foreground[i, torch.as_tensor(p)] = 1.0
    predicted, truth = torch.cat(pairs_pred).float(), torch.cat(pairs_true)
    l1 = F.l1_loss(predicted, truth)
    giou = (1 - torch.diag(generalized_iou(to_start_end(predicted), to_start_end(truth)))).mean()
    weight = torch.where(foreground > 0, 1.0, BACKGROUND_WEIGHT)
    fg = F.binary_cross_entropy_with_logits(logits[rows].float(), foreground, weight=weight)
    return w.l1 * l1 + w.giou * giou + w.foreground * fg


def windows_in_seconds(
    windows: torch.Tensor, logits: torch.Tensor, duration_s: float
) -> list[tuple[float, float, float]]:
    """One clip's (Nq, 2) windows → [(start_s, end_s, confidence)] inside the clip, most confident first."""
    start_end = to_start_end(windows.float()).clamp(0, 1) * duration_s
    scores = torch.sigmoid(logits.float())
    order = scores.argsort(descending=True).tolist()
    return [(float(start_end[i, 0]), float(start_end[i, 1]), float(scores[i])) for i in order]
