"""One pass: decode a video with stage one's exact code, encode, project, and answer with the frozen LLM."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mark1.annotations import LETTERS, letter_choices
from mark1.cache import CacheSpec, position_times
from mark1.checkpoint import check_cache, load_config_of, load_projector, read_meta
from mark1.config import Config
from mark1.encoder import VideoEncoder
from mark1.errors import Mark1Error
from mark1.metrics import moments
from mark1.model.connector import VideoQAModel, parse_device_map
from mark1.video import Clip, load_clip


@dataclass
class InferResult:
    answer: str  # the chosen choice ("B. Sai") or the generated text
    letter: str | None
    probs: dict[str, float]  # letter → probability (empty for free text)
    moments: list[dict[str, float]]  # [{"time_s", "score"}], best first
    saliency: list[float]  # per temporal position
    times_s: list[float]  # time of each temporal position
    timings_s: dict[str, float] = field(default_factory=dict)  # decode, encode, answer


class Mark1:
    """The Python API of `mark1 infer`: `Mark1.from_pretrained("runs/NAME/best").answer(video, question, choices)`."""

    def __init__(
        self, encoder: VideoEncoder, model: VideoQAModel, spec: CacheSpec, decode_backend: str = "auto"
    ) -> None:
        self.encoder, self.model, self.spec, self.decode_backend = encoder, model, spec, decode_backend

    @classmethod
    def from_pretrained(cls, checkpoint: Path | str, cfg: Config | None = None) -> Mark1:
        """Load the backbones the checkpoint names (or `cfg`'s), placed encoder=cuda:0, projector+llm=cuda:1 on 2 GPUs."""
        checkpoint = Path(checkpoint)
        meta = read_meta(checkpoint)
        cfg = cfg or load_config_of(checkpoint)
        placement = parse_device_map(cfg.train.device_map)
        encoder_device = placement.get(
            "encoder", torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        )
        encoder = VideoEncoder.load(cfg, encoder_device)
        spec = encoder.spec()
        check_cache(meta, spec, checkpoint)  # the encoder must give the features the projector was trained on
        projector = load_projector(checkpoint)
        together = f"projector={placement['llm']},llm={placement['llm']}"  # the projector sits with the LLM
        model = VideoQAModel.load(cfg, spec.grid[-1], projector, device_map=together)
        return cls(encoder, model, spec, cfg.extract.decode_backend)

    def features(self, clip: Clip) -> torch.Tensor:
        """(T', H', W', D) features of a decoded clip, rounded to float16 exactly as the cache stores them."""
        return self.encoder(clip.frames[None])[0].to("cpu", torch.float16)

    def decode(self, video: Path) -> Clip:
        return load_clip(Path(video), self.spec.num_frames, self.spec.crop_size, backend=self.decode_backend)

    def answer(
        self, video: Path | str, question: str, choices: list[str] | None = None, max_new_tokens: int = 64
    ) -> InferResult:
        """Answer one question about one video; with choices, rank them; without, generate free text."""
        t0 = time.perf_counter()
        clip = self.decode(Path(video))
        t1 = time.perf_counter()
        features = self.features(clip)
        t2 = time.perf_counter()
        times = position_times(clip.frame_times_s, self.spec.tubelet_size).tolist()
        if choices:
            choices = letter_choices(choices, 0, "-", [])
            out = self.model.answer(features, question, choices)
            letters = [LETTERS[i] for i in range(len(choices))]
            text, letter = choices[out.index], letters[out.index]
            probs, saliency = dict(zip(letters, out.probs, strict=True)), out.saliency
        else:
            text, saliency = self.model.generate(features, question, max_new_tokens)
            letter, probs = None, {}
        t3 = time.perf_counter()
        found = [{"time_s": round(t, 3), "score": round(s, 4)} for t, s in moments(saliency, times)]
        timings = {"decode": t1 - t0, "encode": t2 - t1, "answer": t3 - t2}
        return InferResult(
            text, letter, probs, found, saliency, times, {k: round(v, 4) for k, v in timings.items()}
        )


def save_timeline(result: InferResult, clip: Clip, path: Path) -> None:
    """A PNG of saliency over time with the frames nearest the top moments as thumbnails (needs matplotlib)."""
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
    curve.set(xlabel="seconds", ylabel="saliency", ylim=(0, 1), title=f"answer: {result.answer}")
    frame_times = np.asarray(clip.frame_times_s)
    for i, m in enumerate(shown):
        ax = fig.add_subplot(grid[1, i])
        frame = clip.frames[int(np.abs(frame_times - m["time_s"]).argmin())].permute(1, 2, 0).numpy()
        ax.imshow(frame)
        ax.set_title(f"{m['time_s']:.2f} s ({m['score']:.2f})", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
