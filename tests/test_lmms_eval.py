"""Mark-1 as an lmms-eval model: lmms-eval's own Instances answered as `mark1 eval` answers the same rows."""

from __future__ import annotations

import json
import math
import os
from importlib.metadata import entry_points
from pathlib import Path

import pytest

try:
    import lmms_eval  # noqa: F401
except ImportError as err:  # CI installs the `lmms` extra: there a missing lmms-eval is a failure
    if os.environ.get("CI"):
        raise ImportError("CI is set but lmms-eval is missing: install Mark-1 with its `lmms` extra") from err
    pytest.skip(
        'lmms-eval is not installed (pip install -e ".[lmms]"); CI installs it and runs these tests',
        allow_module_level=True,
    )

from lmms_eval.api.instance import Instance

from mark1.errors import AnnotationError
from mark1.lmms import Mark1LMM, choices_of, cut_at, question_of
from mark1.model.mark1 import Mark1
from mark1.stages.evaluate import evaluate

TASK, SPLIT = "mark1_lmms_test", "test"
INSTRUCTION = "Answer with the option's letter from the given choices directly."


def doc_to_text(doc: dict) -> str:
    """As a video multiple-choice task writes its context: question, options, an instruction."""
    return "\n".join([doc["question"], *doc["choices"], INSTRUCTION])


def _requests(docs: list[dict], videos: Path, continuation) -> list[Instance]:
    """lmms-eval's multiple_choice requests: one per choice, `idx` its position, target_delimiter " "."""

    def doc_to_visual(doc: dict) -> list[str]:
        return [str(videos / Path(doc["video_path"]).name)]

    return [
        Instance(
            request_type="loglikelihood",
            arguments=(doc_to_text(doc), " " + continuation(choice), doc_to_visual, doc_id, TASK, SPLIT),
            idx=i,
            metadata={"task": TASK, "doc_id": doc_id, "repeats": 1},
        )
        for doc_id, doc in enumerate(docs)
        for i, choice in enumerate(doc["choices"])
    ]


def _model(trained, docs: list[dict], cached: bool) -> Mark1LMM:
    """Built as lmms-eval builds a model: from the --model_args string and its own extra arguments."""
    args = f"pretrained={trained.run_dir / 'best'}" + (f",cache={trained.cache_dir}" if cached else "")
    model = Mark1LMM.create_from_arg_string(args, {"batch_size": 1, "max_batch_size": None, "device": None})
    model.task_dict = {TASK: {SPLIT: docs}}
    return model


@pytest.fixture(scope="module")
def scored(trained, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[dict]]:
    """The test rows (the docs) and `mark1 eval`'s predictions on them, in the same order."""
    out = tmp_path_factory.mktemp("lmms-eval")
    result = evaluate(trained.run_dir / "best", trained.cache_dir, trained.data_dir / "test.json", out)
    predictions = [json.loads(line) for line in result.predictions_path.read_text().splitlines()]
    docs = json.loads((trained.data_dir / "test.json").read_text(encoding="utf-8"))["data"]
    assert [p["id"] for p in predictions] == [d["id"] for d in docs] and len(docs) >= 2
    return docs, predictions


def _per_doc(docs: list[dict], results: list[tuple[float, bool]]) -> list[list[tuple[float, bool]]]:
    sizes = [len(d["choices"]) for d in docs]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [results[s : s + n] for s, n in zip(starts, sizes, strict=True)]


def _check_against_eval(per_doc: list[list[tuple[float, bool]]], predictions: list[dict]) -> None:
    for doc_results, prediction in zip(per_doc, predictions, strict=True):
        lls = [ll for ll, _ in doc_results]
        assert [greedy for _, greedy in doc_results] == [k == prediction["pred"] for k in range(len(lls))]
        assert max(range(len(lls)), key=lls.__getitem__) == prediction["pred"]
        top = max(lls)
        norm = top + math.log(sum(math.exp(ll - top) for ll in lls))
        # mark1 eval's probabilities are the softmax of these log-likelihoods (rounded to 6 places there)
        assert [math.exp(ll - norm) for ll in lls] == pytest.approx(prediction["probs"], abs=2e-6)
        assert all(ll < 0 for ll in lls)


def test_loglikelihood_from_the_cache_equals_mark1_eval(trained, scored) -> None:
    docs, predictions = scored
    model = _model(trained, docs, cached=True)
    videos = trained.data_dir / "videos"
    full = model.loglikelihood(_requests(docs, videos, lambda c: c))  # " A. Đỏ"
    _check_against_eval(_per_doc(docs, full), predictions)
    # The same scores whichever way a task writes its continuations: a bare letter (its text from the
    # context's option line) or a bare text (lettered by position).
    letters = model.loglikelihood(_requests(docs, videos, lambda c: c[0]))
    texts = model.loglikelihood(_requests(docs, videos, lambda c: c[3:]))
    assert letters == full and texts == full
    # Scored per doc whatever the order lmms-eval hands the requests in.
    shuffled = _requests(docs, videos, lambda c: c)[::-1]
    assert model.loglikelihood(shuffled) == full[::-1]


def test_loglikelihood_by_encoding_the_video_equals_mark1_eval(trained, scored) -> None:
    docs, predictions = scored
    model = _model(trained, docs, cached=False)
    assert model.cache is None
    results = model.loglikelihood(_requests(docs, trained.data_dir / "videos", lambda c: c))
    _check_against_eval(_per_doc(docs, results), predictions)


def test_generate_until_equals_mark1_free_text(trained, scored) -> None:
    docs, _ = scored
    model = _model(trained, docs, cached=True)
    question = "Mô tả video."
    open_docs = [{**docs[0], "question": question, "choices": []}]
    model.task_dict = {TASK: {SPLIT: open_docs}}
    video = trained.data_dir / "videos" / Path(docs[0]["video_path"]).name

    def ask(until: list[str]) -> str:
        gen_kwargs = {"max_new_tokens": 6, "until": until}
        request = Instance(
            request_type="generate_until",
            arguments=(question, gen_kwargs, lambda doc: [str(video)], 0, TASK, SPLIT),
            idx=0,
            metadata={"task": TASK, "doc_id": 0, "repeats": 1},
        )
        return model.generate_until([request])[0]

    # Mark-1's own one pass: decodes and encodes the video (its features equal the cached ones).
    mark1 = Mark1.from_pretrained(trained.run_dir / "best")
    expected = mark1.answer(video, question, max_new_tokens=6).answer
    assert ask([]) == expected.strip()
    assert ask(["\n\n"]) == cut_at(expected, ["\n\n"]).strip()
    if len(expected.strip()) > 1:  # cut at its own second character: what is left is the first
        assert ask([expected.strip()[1]]) == expected.strip()[0]


def test_the_entry_point_and_lmms_evals_registry_find_mark1() -> None:
    found = [ep for ep in entry_points(group="lmms_eval.models") if ep.name == "mark1"]
    assert [ep.value for ep in found] == ["mark1.lmms:manifest"]
    from lmms_eval.models import get_model, list_available_models

    assert "mark1" in list_available_models() and get_model("mark1") is Mark1LMM


def test_choices_from_continuations_and_the_context() -> None:
    context = "Biển báo màu gì?\nA. Đỏ\nB. Xanh lá\n(C) Vàng\n" + INSTRUCTION
    assert choices_of(["A. Đỏ", "B. Xanh lá", "C. Vàng"], context) == ["A. Đỏ", "B. Xanh lá", "C. Vàng"]
    assert choices_of([" Đỏ", " Xanh lá"], context) == ["A. Đỏ", "B. Xanh lá"]
    assert choices_of([" A", " (B)", "C"], context) == ["A. Đỏ", "B. Xanh lá", "C. Vàng"]
    with pytest.raises(AnnotationError, match="no option line 'D. text'"):
        choices_of([" A", " D"], context)


def test_the_question_is_what_precedes_the_options() -> None:
    choices = ["A. Đỏ", "B. Xanh lá"]
    assert question_of("<video>\nBiển báo\nmàu gì?\nA. Đỏ\nB. Xanh lá\n" + INSTRUCTION, choices) == (
        "Biển báo\nmàu gì?"
    )
    assert question_of("Biển báo màu gì?\n(A) Đỏ\n(B) Xanh lá", choices) == "Biển báo màu gì?"
    assert question_of("Biển báo màu gì?\nĐỏ\nXanh lá", choices) == "Biển báo màu gì?"
    assert question_of("Biển báo màu gì? Trả lời ngắn.", []) == "Biển báo màu gì? Trả lời ngắn."
    assert question_of("A. Đỏ\nB. Xanh lá", choices) == "A. Đỏ\nB. Xanh lá"  # options alone: kept whole
    assert cut_at("Đỏ.\n\nB", ["\n\n", "B"]) == "Đỏ." and cut_at("Đỏ", None) == "Đỏ"
