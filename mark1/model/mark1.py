"""`Mark1`, the Python API of one pass: decode a video with stage one's exact code, encode, project, answer."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mark1.annotations import LETTERS, letter_choices
from mark1.cache import CacheSpec, position_times
from mark1.config import Config
from mark1.devices import parse_device_map
from mark1.encoder import VideoEncoder
from mark1.errors import AnnotationError
from mark1.metrics import moments
from mark1.model import hub
from mark1.model.checkpoint import Checkpoint
from mark1.model.video_qa import VideoQAModel
from mark1.video import Clip, load_clip, resolve_backend

log = logging.getLogger(__name__)


@dataclass
class InferResult:
    answer: str  # the chosen choice ("B. Sai") or the generated text
    letter: str | None
    probs: dict[str, float]  # letter → probability (empty for free text)
    moments: list[dict[str, float]]  # [{"time_s", "score"}], best first
    windows: list[dict[str, float]]  # the span head's [{"start_s", "end_s", "score"}], most confident first
    saliency: list[float]  # per temporal position
    times_s: list[float]  # time of each temporal position
    timings_s: dict[str, float] = field(default_factory=dict)  # decode, encode, answer


class Mark1:
    """`Mark1.from_pretrained("runs/NAME/best" or "owner/name").answer(video, question, choices)`."""

    def __init__(
        self,
        encoder: VideoEncoder,
        model: VideoQAModel,
        spec: CacheSpec,
        cfg: Config,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.encoder, self.model, self.spec, self.cfg = encoder, model, spec, cfg
        self.checkpoint = checkpoint  # where it came from: save_pretrained keeps its features and metrics

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: Path | str,
        cfg: Config | None = None,
        *,
        revision: str | None = None,
        local_files_only: bool = False,
    ) -> Mark1:
        """The checkpoint's projector and the backbones its config names (or `cfg`'s), placed by
        `answer.device_map` (two GPUs: encoder and projector on cuda:0, the LLM on cuda:1). `checkpoint` is
        a local directory or a Hub id `owner/name` (through the Hub cache; `revision`, and `local_files_only`
        or HF_HUB_OFFLINE=1 to read the cache only)."""
        ckpt = Checkpoint.open(checkpoint, revision=revision, local_files_only=local_files_only)
        cfg = cfg or ckpt.config
        encoder = VideoEncoder.load(cfg, parse_device_map(cfg.answer.device_map).encoder)
        spec = CacheSpec.for_encoder(encoder.describe())
        backend, trained_on = resolve_backend(cfg.answer.decode_backend), ckpt.cache_spec.decode_backend
        if trained_on not in ("unknown", backend):
            log.warning(
                "decoding with %s; the features this checkpoint trained on were decoded with %s (the two give "
                "the same frames: docs/reliability.md)",
                backend,
                trained_on,
            )
        return cls(encoder, ckpt.load_model(spec, cfg), spec, cfg, ckpt)  # the encoder must fit the projector

    def save_pretrained(
        self,
        directory: Path | str,
        eval_metrics: Path | dict[str, Any] | None = None,
        repo_id: str | None = None,
    ) -> Path:
        """The projector, config.json and a model card README.md (with `eval_metrics`, a `mark1 eval`
        metrics.json or its dict, in its table) into `directory`, whole or not at all; no training state.
        `from_pretrained(directory)` loads it back."""
        spec = self.checkpoint.cache_spec if self.checkpoint else self.spec  # the features it was trained on
        trained = self.checkpoint.metrics if self.checkpoint else {}
        evaluation = hub.read_eval_metrics(eval_metrics)
        return hub.save_pretrained(Path(directory), self.model, self.cfg, spec, trained, evaluation, repo_id)

    def push_to_hub(
        self,
        repo_id: str,
        eval_metrics: Path | dict[str, Any] | None = None,
        *,
        private: bool | None = None,
        revision: str | None = None,
        token: str | None = None,
    ) -> str:
        """`save_pretrained` into a temporary directory, uploaded to Hub repo `repo_id` (created if missing)
        as one commit; returns its URL. Offline or without a token: one HubError line."""

        def write(folder: Path) -> Path:
            return self.save_pretrained(folder, eval_metrics, repo_id)

        return hub.push(write, repo_id, private, revision, token)

    def features(self, clip: Clip) -> torch.Tensor:
        """(T', H', W', D) features of a decoded clip, rounded to float16 exactly as the cache stores them."""
        return self.encoder(clip.frames[None])[0].to("cpu", torch.float16)

    def decode(self, video: Path | str) -> Clip:
        backend = self.cfg.answer.decode_backend
        return load_clip(Path(video), self.spec.num_frames, self.spec.crop_size, backend=backend)

    def answer(
        self,
        video: Path | str | Clip,
        question: str,
        choices: list[str] | None = None,
        max_new_tokens: int | None = None,
    ) -> InferResult:
        """Answer one question about one video (a path, or a clip `decode` gave); with choices, rank them;
        without, generate free text (at most `max_new_tokens`, default `answer.max_new_tokens`)."""
        if not question.strip():
            raise AnnotationError("the question is empty")
        if choices and not all(c.strip() for c in choices):
            raise AnnotationError("a choice is empty")
        if choices and not 2 <= len(choices) <= len(LETTERS):
            raise AnnotationError(
                f"give 2 to {len(LETTERS)} choices (or none for a free answer), got {len(choices)}"
            )
        t0 = time.perf_counter()
        clip = video if isinstance(video, Clip) else self.decode(video)
        t1 = time.perf_counter()
        features = self.features(clip)
        t2 = time.perf_counter()
        times = position_times(clip.frame_times_s, self.spec.tubelet_size).tolist()
        choices = letter_choices(choices, 0, "-", []) if choices else []
        limit = max_new_tokens or self.cfg.answer.max_new_tokens
        out = self.model.answer(features, question, choices, duration_s=clip.duration_s, max_new_tokens=limit)
        t3 = time.perf_counter()
        letter = None if out.index is None else LETTERS[out.index]
        probs = dict(zip(LETTERS, out.probs, strict=False))
        found = [{"time_s": round(t, 3), "score": round(s, 4)} for t, s in moments(out.saliency, times)]
        windows = [
            {"start_s": round(a, 3), "end_s": round(b, 3), "score": round(c, 4)} for a, b, c in out.windows
        ]
        timings = {"decode": t1 - t0, "encode": t2 - t1, "answer": t3 - t2}
        rounded = {k: round(v, 4) for k, v in timings.items()}
        return InferResult(out.text, letter, probs, found, windows, out.saliency, times, rounded)
