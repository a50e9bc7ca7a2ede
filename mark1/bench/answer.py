"""Scoring 4 choices: the prompt's KV cache reused (one batch) against the prompt re-run per choice."""

from __future__ import annotations

import torch

from mark1.bench.measure import BenchResult, timed
from mark1.bench.workload import CHOICES, QUESTION
from mark1.model.video_qa import VideoQAModel


def bench_answer(result: BenchResult, model: VideoQAModel, grid: list[int]) -> None:
    features = torch.randn(grid).half()  # the cost does not depend on the values
    device = model.llm.device
    reuse = timed(
        lambda: model.answer(features, QUESTION, CHOICES, duration_s=8.0, reuse_prompt=True), device, 5
    )
    rerun = timed(
        lambda: model.answer(features, QUESTION, CHOICES, duration_s=8.0, reuse_prompt=False), device, 5
    )
    result.add("answer", "choices/s, shared-prompt KV cache (4 choices)", 4 / reuse, "choices/s")
    result.add("answer", "choices/s, prompt re-run per choice", 4 / rerun, "choices/s")
    result.add("answer", "KV cache / re-run", rerun / reuse, "ratio")
