"""Proof that the projector learns to see: held-out generated videos, tiny random backbones, CPU."""

from pathlib import Path

import pytest

from mark1.demo import run_demo


def _run(tiny, tmp_path: Path, num_videos: int, family: str, *overrides: str) -> dict:
    result = run_demo(
        tmp_path, num_videos, family, seed=1, cfg=tiny.config("extract.decode_workers=2", *overrides)
    )
    return result.eval.metrics


@pytest.mark.slow
def test_learns_beyond_chance_on_a_small_set(tiny, tmp_path: Path) -> None:
    """About 40 s: 48 training clips; chance is ~0.40 for answers (2-4 choices) and ~0.3 for hit@1."""
    metrics = _run(tiny, tmp_path, 60, "visual", "train.epochs=45")
    print("small visual set:", metrics)
    assert metrics["hit@1_1s"] >= 0.8
    assert metrics["accuracy"] >= 0.6


@pytest.mark.slow
def test_visual_family_reaches_the_bar(tiny, tmp_path: Path) -> None:
    metrics = _run(tiny, tmp_path, 120, "visual")
    print("visual family:", metrics)
    assert metrics["accuracy"] >= 0.90
    assert metrics["hit@1_1s"] >= 0.80


@pytest.mark.slow
def test_open_family_reaches_the_bars(tiny, tmp_path: Path) -> None:
    """Per clip a free description ("Biển báo màu đỏ, bên trái."; chance of an exact match: 1 in 8), a colour
    question and a grounding query with only a span. The span head's windows must beat the window grown
    from the saliency curve on the same rows."""
    metrics = _run(tiny, tmp_path, 120, "open")
    print("open family:", metrics)
    assert metrics["open_questions"] == 24 and metrics["exact_match"] >= 0.8
    assert metrics["accuracy"] >= 0.9 and metrics["hit@1_1s"] >= 0.9
    assert metrics["span_questions"] == 72 and metrics["span_R@1_iou0.5"] >= 0.8
    assert metrics["span_mIoU"] > metrics["mIoU"]


@pytest.mark.slow
def test_binding_family_reaches_the_bar(tiny, tmp_path: Path) -> None:
    """Shuffled choices: the projector must bind what it sees to the choice text (1.000 with the span head,
    0.917 since the timeline fusion at these 30 epochs; 0.708 without the span head: README, Findings)."""
    metrics = _run(tiny, tmp_path, 120, "binding")
    print("binding family:", metrics)
    assert metrics["accuracy"] >= 0.9
    assert metrics["hit@1_1s"] >= 0.80  # where the sign is does not depend on the choice order


@pytest.mark.slow
def test_visual_family_reaches_the_bar_through_a_tiny_llama(tiny, tmp_path: Path) -> None:
    """A Llama-2-style LLM whose tokenizer has neither a placeholder nor a chat template, warmed up as the
    tiny Qwen3 is (1.000; 0.563 before the warm-up's open questions: README, Findings)."""
    from mark1.tiny import write_tiny_llm

    llama = write_tiny_llm(tmp_path / "llms", "llama", tiny.sizes)
    metrics = _run(tiny, tmp_path / "run", 120, "visual", f"llm={llama}")
    print("visual family, tiny llama:", metrics)
    assert metrics["accuracy"] >= 0.9 and metrics["hit@1_1s"] >= 0.80
    assert metrics["answered"] == metrics["questions"] == 48


@pytest.mark.slow
def test_visual_family_reaches_the_bar_through_a_4_bit_llm(tiny, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    metrics = _run(tiny, tmp_path, 120, "visual", "llm.quantization=nf4")
    print("visual family, tiny Qwen3 in nf4:", metrics)
    assert metrics["accuracy"] >= 0.90
    assert metrics["hit@1_1s"] >= 0.80
