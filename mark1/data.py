"""QA records + feature cache → tokenized, padded training batches."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, fields
from functools import partial

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from mark1.annotations import Issue, QARecord
from mark1.cache import FeatureCache
from mark1.config import PromptConfig
from mark1.errors import AnnotationError
from mark1.prompt import answer_ids, encode_prompt, encode_text, fit_text, question_text

log = logging.getLogger(__name__)
IGNORE = -100  # label of positions that are not part of the answer


@dataclass
class Batch:
    """A padded batch: what `VideoQAModel.loss` consumes."""

    features: torch.Tensor  # (B, T', H', W', D) float16 video features
    question_ids: torch.Tensor  # (B, L) question + choices for the fusion layers
    question_mask: torch.Tensor  # (B, L) bool, True on real tokens
    input_ids: torch.Tensor  # (B, S) prompt + answer, with video placeholders
    attention_mask: torch.Tensor  # (B, S)
    labels: torch.Tensor  # (B, S) answer token ids, IGNORE elsewhere (everywhere in a row without an answer)
    saliency_target: torch.Tensor  # (B, T') 0/1
    has_support: torch.Tensor  # (B,) bool: rows without support frames train no saliency
    span_target: torch.Tensor  # (B, G, 2) ground-truth windows (centre, width) as fractions of the clip
    num_spans: torch.Tensor  # (B,) how many of row b's G windows are real (0: no span loss for the row)

    def pin_memory(self) -> Batch:
        """Page-locked copies (the DataLoader calls this with pin_memory=True): copies to a GPU then run
        asynchronously instead of making the host wait."""
        return Batch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})


def warn_truncated(record: QARecord) -> None:
    log.warning(
        "row %d (id %s): question, choices or answer cut to the prompt's token caps", record.row, record.id
    )


def saliency_targets(times: np.ndarray, support_frames: list[float], radius_s: float) -> np.ndarray:
    """(T',) 0/1 targets: the position nearest each support frame, and every position within `radius_s` of one."""
    target = np.zeros(len(times), dtype=np.float32)
    for second in support_frames:
        distance = np.abs(times - second)
        target[int(distance.argmin())] = 1.0
        target[distance <= radius_s] = 1.0
    return target


def span_targets(spans: list[tuple[float, float]], duration_s: float) -> np.ndarray:
    """(G, 2) windows in seconds → (centre, width) as fractions of the clip, clipped to it."""
    fractions = np.clip(np.asarray(spans, dtype=np.float32).reshape(-1, 2) / max(duration_s, 1e-6), 0, 1)
    return np.stack([fractions.mean(axis=1), fractions[:, 1] - fractions[:, 0]], axis=1)


@dataclass
class Example:
    key: str
    question_ids: list[int]
    input_ids: list[int]
    labels: list[int]
    saliency: np.ndarray
    has_support: bool
    spans: np.ndarray  # (G, 2) (centre, width) fractions
    truncated: bool  # the question, a choice or the answer was cut to the prompt's token caps


def make_example(
    record: QARecord,
    tokenizer: PreTrainedTokenizerBase,
    num_video_tokens: int,
    times: np.ndarray,
    duration_s: float,
    radius_s: float,
    budget: PromptConfig | None = None,
) -> Example:
    """Tokenize one record: the shared prompt, then its answer ("B. Sai<|im_end|>", or an open question's
    free text) as the only labelled tokens (none for a grounding query); question, choices and answer cut
    to the token caps exactly as answering cuts them."""
    if record.key is None or not record.learnable:
        raise ValueError(f"record {record.id} needs a matched video key and something to train on")
    budget = budget or PromptConfig()
    text = fit_text(tokenizer, record.question, record.choices, budget, record.answer_text)
    encode = partial(encode_text, tokenizer)
    where = f"row {record.row} (id {record.id})"
    prompt = encode_prompt(tokenizer, text, num_video_tokens, budget, where, record.kind != "grounding")
    target = text.choices[record.answer] if record.answer is not None else text.answer
    answer = [] if target is None else answer_ids(tokenizer, target)
    return Example(
        key=record.key,
        question_ids=encode(question_text(text.question, text.choices)),
        input_ids=prompt + answer,
        labels=[IGNORE] * len(prompt) + answer,
        saliency=saliency_targets(times, record.support_frames, radius_s),
        has_support=bool(record.support_frames),
        spans=span_targets(record.spans, duration_s),
        truncated=text.truncated,
    )


class QADataset(Dataset):
    """Tokenized once up front; each item reads its clip's features from the cache (never a video)."""

    def __init__(
        self,
        records: list[QARecord],
        cache: FeatureCache,
        tokenizer: PreTrainedTokenizerBase,
        num_video_tokens: int,
        radius_s: float,
        budget: PromptConfig | None = None,
    ) -> None:
        self.cache = cache
        self.examples = [
            make_example(
                r,
                tokenizer,
                num_video_tokens,
                cache.position_times(r.key),
                cache.row(r.key)["duration_s"],
                radius_s,
                budget,
            )
            for r in records
        ]
        for record, example in zip(records, self.examples, strict=True):
            if example.truncated:
                warn_truncated(record)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, Example]:
        example = self.examples[index]
        return self.cache[example.key][0], example


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    longest = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (longest - len(r)) for r in rows], dtype=torch.long)


def collate(items: list[tuple[np.ndarray, Example]], pad_id: int = 0) -> Batch:
    """Right-pad text, stack features and targets."""
    features = torch.from_numpy(np.stack([f for f, _ in items]))
    examples = [e for _, e in items]
    input_ids = _pad([e.input_ids for e in examples], pad_id)
    spans = np.zeros((len(examples), max(len(e.spans) for e in examples), 2), dtype=np.float32)
    for row, e in enumerate(examples):
        spans[row, : len(e.spans)] = e.spans
    return Batch(
        features=features,
        question_ids=_pad([e.question_ids for e in examples], pad_id),
        question_mask=_pad([[1] * len(e.question_ids) for e in examples], 0).bool(),
        input_ids=input_ids,
        attention_mask=_pad([[1] * len(e.input_ids) for e in examples], 0),
        labels=_pad([e.labels for e in examples], IGNORE),
        saliency_target=torch.from_numpy(np.stack([e.saliency for e in examples])),
        has_support=torch.tensor([e.has_support for e in examples]),
        span_target=torch.from_numpy(spans),
        num_spans=torch.tensor([len(e.spans) for e in examples]),
    )


def split_by_video(
    records: list[QARecord], fraction: float, seed: int
) -> tuple[list[QARecord], list[QARecord]]:
    """Hold out whole videos, so no clip is seen by both splits."""
    videos = sorted({r.key for r in records})
    if fraction <= 0 or len(videos) < 2:
        return records, []
    random.Random(seed).shuffle(videos)
    held = set(videos[: max(1, round(fraction * len(videos)))])
    return [r for r in records if r.key not in held], [r for r in records if r.key in held]


def budget_issues(
    records: list[QARecord], tokenizer: PreTrainedTokenizerBase, num_video_tokens: int, budget: PromptConfig
) -> list[Issue]:
    """What the prompt's token caps do to each record: a warning where text will be cut, an error where the
    prompt cannot fit (`mark1 validate --llm`, and validation questions before training starts)."""
    issues = []
    for record in records:
        text = fit_text(tokenizer, record.question, record.choices, budget, record.answer_text)
        if text.truncated:
            issues.append(
                Issue(
                    record.row,
                    record.id,
                    "question, choices or answer will be cut to the token caps",
                    "warning",
                )
            )
        try:
            encode_prompt(tokenizer, text, num_video_tokens, budget, "-", record.kind != "grounding")
        except AnnotationError as err:
            issues.append(Issue(record.row, record.id, str(err).removeprefix("-: ")))
    return issues
