"""The saliency timeline of one answer: a PNG of saliency over time with the frames of the top moments."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mark1.errors import Mark1Error
from mark1.files import atomic_file
from mark1.model.mark1 import InferResult
from mark1.video import Clip


def save_timeline(result: InferResult, clip: Clip, path: Path) -> None:
    """A PNG of saliency over time, the span head's most confident window shaded, and the frames nearest the
    top moments as thumbnails (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise Mark1Error("--timeline needs matplotlib: pip install 'mark1[plot]'") from err
    shown = result.moments[:3]
    fig = plt.figure(figsize=(10, 4.5))
    grid = fig.add_gridspec(2, max(1, len(shown)), height_ratios=[1.2, 1])
    curve = fig.add_subplot(grid[0, :])
    curve.plot(result.times_s, result.saliency, marker="o")
    for m in shown:
        curve.axvline(m["time_s"], color="tab:red", alpha=0.5)
    if result.windows:  # the span head's most confident window, shaded
        top = result.windows[0]
        curve.axvspan(
            top["start_s"], top["end_s"], color="tab:green", alpha=0.2, label=f"window ({top['score']:.2f})"
        )
        curve.legend(loc="upper right", fontsize=8)
    curve.set(xlabel="seconds", ylabel="saliency", ylim=(0, 1), title=f"answer: {result.answer}")
    frame_times = np.asarray(clip.frame_times_s)
    for i, m in enumerate(shown):
        ax = fig.add_subplot(grid[1, i])
        frame = clip.frames[int(np.abs(frame_times - m["time_s"]).argmin())].permute(1, 2, 0).numpy()
        ax.imshow(frame)
        ax.set_title(f"{m['time_s']:.2f} s ({m['score']:.2f})", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    with atomic_file(path, "wb") as f:  # PNG whatever the name says: the path printed is the file written
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
