"""Open questions, grounding queries and the span head: reading them, scoring them, training on them."""

from __future__ import annotations

import csv
import itertools
import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from mark1.annotations import load_annotations
from mark1.errors import AnnotationError
from mark1.matching import match_videos, require_valid
from mark1.metrics import average_precision, exact_match, normalize_answer, span_metrics, summarize, token_f1
from mark1.model.spans import SpanWeights, generalized_iou, match, to_start_end

MIXED = [
    {"id": "mc", "question": "Màu gì?", "choices": ["A. Đỏ", "B. Vàng"], "answer": "B", "video": "v.mp4"},
    {"id": "open", "question": "Mô tả biển báo.", "answer": "Biển báo màu đỏ, bên trái.", "video": "v.mp4"},
    {"id": "open-test", "question": "Mô tả biển báo.", "video": "v.mp4"},
    {"id": "span", "question": "Biển báo xuất hiện lúc nào?", "spans": [[1.0, 2.5]], "video": "v.mp4"},
    {"id": "empty-choices", "question": "Mô tả.", "choices": [], "answer": "Có", "video": "v.mp4"},
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_open_and_grounding_rows_are_read_with_their_kind(tmp_path: Path) -> None:
    records, issues = load_annotations(_write_jsonl(tmp_path / "mixed.jsonl", MIXED))
    assert not issues
    by_id = {r.id: r for r in records}
    assert [r.kind for r in records] == ["choice", "open", "open", "grounding", "open"]
    assert by_id["mc"].target == "B. Vàng" and by_id["mc"].answer_text is None
    assert by_id["open"].target == "Biển báo màu đỏ, bên trái." and by_id["open"].answer is None
    assert by_id["open-test"].target is None and not by_id["open-test"].learnable
    assert by_id["span"].target is None and by_id["span"].learnable and by_id["span"].spans == [(1.0, 2.5)]
    with pytest.raises(AnnotationError, match="row 3 \\(id open-test\\): nothing to train on"):
        require_valid(tmp_path / "mixed.jsonl", for_training=True)


def test_a_free_answer_must_be_words_not_a_number_or_a_lost_choice_letter(tmp_path: Path) -> None:
    rows = [
        {"id": "o", "question": "Mô tả.", "answer": 3, "video": "v.mp4"},
        # a multiple-choice file whose choices column is misspelled must not train "B" as free text
        {"id": "m", "question": "Màu gì?", "options": ["A. Đỏ", "B. Vàng"], "answer": "B.", "video": "v.mp4"},
    ]
    _, issues = load_annotations(_write_jsonl(tmp_path / "bad.jsonl", rows))
    assert [str(i) for i in issues] == [
        "row 1 (id o): 'answer' of an open question must be text, got 3",
        "row 2 (id m): 'answer' is the letter 'B.' but the row has no 'choices' (a missing or misspelled "
        "column?); give the choices, or write an open question's answer in words",
        "row 0 (id -): unknown keys ignored: options",
    ]


def test_a_row_may_say_its_kind(tmp_path: Path) -> None:
    rows = [
        {"id": "g", "kind": "grounding", "question": "Lúc nào?", "video": "v.mp4"},  # a test file's query
        {"id": "o", "kind": "open", "question": "Mô tả.", "spans": [[1, 2]], "video": "v.mp4"},
        {
            "id": "ga",
            "kind": "grounding",
            "question": "Lúc nào?",
            "answer": "x",
            "spans": [[1, 2]],
            "video": "v",
        },
        {"id": "bad", "kind": "choice", "question": "Mô tả.", "video": "v.mp4"},
        {"id": "bad2", "kind": "open", "question": "?", "choices": ["A. a", "B. b"], "video": "v.mp4"},
        {"id": "bad3", "kind": "essay", "question": "?", "video": "v.mp4"},
    ]
    records, issues = load_annotations(_write_jsonl(tmp_path / "kinds.jsonl", rows))
    assert [(r.id, r.kind, r.answer_text) for r in records] == [
        ("g", "grounding", None),
        ("o", "open", None),
        ("ga", "grounding", None),
    ]
    assert [(i.row, i.level) for i in issues] == [(3, "warning"), (4, "error"), (5, "error"), (6, "error")]
    assert "a grounding query's 'answer' is not used" in str(issues[0]) and "'kind' must be one of" in str(
        issues[3]
    )


def test_a_grounding_query_needs_no_room_for_an_answer(model) -> None:
    from dataclasses import replace

    from mark1.annotations import QARecord
    from mark1.data import budget_issues

    long = "lúc nào " * 20
    rows = [QARecord("g", "v", long, [], kind="grounding"), QARecord("o", "v", long, [], kind="open")]
    budget = replace(model.budget, max_prompt_tokens=len(model.tokenizer(long).input_ids) + 80)
    issues = budget_issues(rows, model.tokenizer, model.num_video_tokens, budget)
    assert [(i.id, i.level) for i in issues] == [("o", "error")]  # the open one must fit its 64-token answer


def test_qvhighlights_lines_become_grounding_rows(tmp_path: Path) -> None:
    lines = [
        {
            "qid": 2579,
            "query": "A girl and her mother cooked while talking with each other on facetime.",
            "duration": 150,
            "vid": "NUsG9BgSes0_210.0_360.0",
            "relevant_windows": [[0, 70], [80, 100]],
            "relevant_clip_ids": [0, 1, 2],
            "saliency_scores": [[1, 2, 3], [2, 2, 2], [4, 4, 4]],
        },
        {"qid": 9, "query": "Test split: no windows.", "duration": 150, "vid": "x_0.0_150.0"},
    ]
    records, issues = load_annotations(_write_jsonl(tmp_path / "highlight_val.jsonl", lines))
    assert not issues  # QVHighlights' own keys are known, not "unknown keys ignored"
    first, second = records
    assert (first.id, first.video, first.kind) == ("2579", "NUsG9BgSes0_210.0_360.0", "grounding")
    assert first.question.startswith("A girl") and first.spans == [(0.0, 70.0), (80.0, 100.0)]
    assert second.kind == "grounding" and second.spans == [] and not second.learnable


def test_charades_sta_lines_become_grounding_rows(tmp_path: Path) -> None:
    path = tmp_path / "charades_sta_test.txt"
    path.write_text(
        "3MSZA 24.3 30.4##person turn a light on.\n\nAO8RW 0.0 6.9##a person is putting a book.\n"
    )
    records, issues = load_annotations(path)
    assert not issues
    assert [(r.id, r.video, r.spans, r.kind) for r in records] == [
        ("3MSZA_1", "3MSZA", [(24.3, 30.4)], "grounding"),
        ("AO8RW_3", "AO8RW", [(0.0, 6.9)], "grounding"),
    ]
    assert records[0].question == "person turn a light on."
    path.write_text(
        "3MSZA 24.3 30.4##fine\n3MSZA twenty 30.4##broken\n3MSZA 1.2.3 4##odd\n3MSZA 3 1##reversed\n"
    )
    records, issues = load_annotations(path)  # every bad line reported, the good ones kept
    assert [r.id for r in records] == ["3MSZA_1"]
    assert [str(i) for i in issues[:2]] == [
        "row 2 (id ?): line 2 is not a Charades-STA line 'VIDEO START END##SENTENCE': '3MSZA twenty 30.4##broken'",
        "row 3 (id ?): line 3 is not a Charades-STA line 'VIDEO START END##SENTENCE': '3MSZA 1.2.3 4##odd'",
    ]
    assert "row 4 (id 3MSZA_4): 'spans' must be a list of [start, end]" in str(issues[2])


def test_videos_named_without_an_extension_match_their_file(tmp_path: Path) -> None:
    path = tmp_path / "q.txt"
    path.write_text("3MSZA 1 2##a\nNUsG9BgSes0_210.0_360.0 1 2##b\nmissing 1 2##c\n")
    records, _ = load_annotations(path)
    issues = match_videos(records, ["videos/3MSZA.mp4", "videos/NUsG9BgSes0_210.0_360.0.mp4"])
    assert [r.key for r in records] == ["videos/3MSZA.mp4", "videos/NUsG9BgSes0_210.0_360.0.mp4", None]
    assert len(issues) == 1 and "row 3" in str(issues[0])


def test_exact_match_and_f1_are_squad_style() -> None:
    decomposed = unicodedata.normalize("NFD", "Biển báo màu đỏ, bên trái.")
    assert exact_match(decomposed, "  biển BÁO màu đỏ bên trái ") and normalize_answer("a, b!  c…") == "a b c"
    assert normalize_answer("3.5 «km/h»") == "35 kmh"  # deleted, as SQuAD deletes punctuation
    assert not exact_match("Biển báo màu đỏ, bên phải.", "Biển báo màu đỏ, bên trái.")
    # 4 words in common: precision 4/4, recall 4/6 → F1 0.8
    assert token_f1("biển báo màu đỏ", "Biển báo màu đỏ, bên trái.") == pytest.approx(0.8)
    assert token_f1("", "x") == 0.0 and token_f1("", "") == 1.0 and token_f1("y z", "x") == 0.0


def test_average_precision_by_hand() -> None:
    truth = [[0, 10], [20, 30]]
    # ranked: TP (IoU 1), FP (no overlap), TP (IoU 0.9): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1;
    # interpolated from the right: 1, 2/3, 2/3 → AP = 1/2 * 1 + 1/2 * 2/3
    windows = [[21, 30, 0.7], [0, 10, 0.9], [40, 50, 0.8]]
    assert average_precision(windows, truth, 0.5) == pytest.approx(0.5 + 1 / 3)
    assert average_precision(windows, truth, 0.95) == pytest.approx(0.5)  # IoU 0.9 misses: only the first
    # a second window on an already-taken ground truth is a false positive
    assert average_precision([[0, 10, 0.9], [0, 10, 0.8]], [[0, 10]], 0.5) == pytest.approx(1.0)
    assert average_precision([[0, 10, 0.8], [0, 10, 0.9], [20, 30, 0.1]], truth, 0.5) == pytest.approx(
        0.5 + 0.5 * 2 / 3
    )


def test_r1_takes_the_ground_truth_window_the_top_window_overlaps_best() -> None:
    rows = [
        {"windows": [[20, 30, 0.9], [0, 10, 0.1]], "spans": [[0, 10], [20, 28]]},  # IoU 0.8 with the second
        {"windows": [[0, 5, 0.9]], "spans": [[0, 10]]},  # IoU 0.5
    ]
    metrics = span_metrics(rows, "span_", with_map=True)
    assert metrics["span_R@1_iou0.5"] == 1.0 and metrics["span_R@1_iou0.7"] == 0.5
    assert metrics["span_mIoU"] == pytest.approx(0.65)
    # at 0.5 every window finds its own ground truth (AP 1, 1); at 0.75 the second row's IoU 0.5 misses (1, 0)
    assert metrics["span_mAP@0.5"] == 1.0 and metrics["span_mAP@0.75"] == 0.5
    assert 0 <= metrics["span_mAP"] <= metrics["span_mAP@0.5"]


def test_summary_scores_each_kind_on_its_own_rows() -> None:
    rows = [
        {"kind": "choice", "pred": 1, "answer": 1, "probs": [0.2, 0.8]},
        {"kind": "choice", "pred": 0, "answer": 1, "probs": [0.6, 0.4]},
        {"kind": "open", "text": "x", "answer": "x", "exact_match": True, "f1": 1.0},
        {"kind": "open", "text": "y", "answer": None},  # no answer: not scored
        {"kind": "grounding"},
    ]
    metrics = summarize(rows)
    assert metrics["questions"] == 5 and metrics["answered"] == 3 and metrics["open_questions"] == 1
    assert metrics["accuracy"] == 0.5 and metrics["exact_match"] == 1.0 and metrics["f1"] == 1.0
    assert metrics["answer_score"] == pytest.approx(2 / 3)


def test_generalized_iou_by_hand() -> None:
    a = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 3.0], [0.5, 1.5]])
    expected = torch.tensor([[1.0, -1 / 3, 1 / 3], [1.0, -1 / 3, 1 / 3]])  # disjoint: 0 - (3 - 2) / 3
    assert torch.allclose(generalized_iou(a, b), expected)
    assert torch.allclose(to_start_end(torch.tensor([[0.5, 0.2]])), torch.tensor([[0.4, 0.6]]))


def test_matching_is_the_least_cost_assignment() -> None:
    generator = torch.Generator().manual_seed(0)
    w = SpanWeights()
    for truth_count in (1, 2, 3):
        windows = torch.rand(5, 2, generator=generator) * 0.5 + 0.1
        logits = torch.randn(5, generator=generator)
        truth = torch.rand(truth_count, 2, generator=generator) * 0.5 + 0.1
        ((chosen, assigned),) = match(windows[None], logits[None], [truth], w)
        cost = (
            w.l1 * torch.cdist(windows, truth, p=1)
            - w.giou * generalized_iou(to_start_end(windows), to_start_end(truth))
            - w.foreground * torch.sigmoid(logits)[:, None]
        )
        best = min(
            sum(cost[p, g].item() for g, p in enumerate(perm))
            for perm in itertools.permutations(range(5), truth_count)
        )
        assert sorted(assigned.tolist()) == list(range(truth_count))
        assert cost[chosen, assigned].sum().item() == pytest.approx(best, rel=1e-5)


def test_the_span_loss_trains_the_span_head_only_where_rows_have_spans(model, tiny) -> None:
    from mark1.annotations import QARecord
    from mark1.data import collate, make_example

    def example(spans: list[tuple[float, float]], answer_text: str | None = None):
        record = QARecord("q", "v.mp4", "Mô tả.", [], None, [], spans, 1, "v.mp4", answer_text, "grounding")
        if answer_text:
            record.kind = "open"
        return make_example(record, model.tokenizer, model.num_video_tokens, np.arange(8.0), 8.0, 0.5)

    features = np.random.default_rng(0).standard_normal(tiny.grid).astype(np.float16)
    head = [p for n, p in model.projector.named_parameters() if n.startswith("span_")]
    batch = collate([(features, example([(2.0, 4.0), (5.0, 6.0)])), (features, example([], "Có."))])
    assert torch.allclose(batch.span_target[0], torch.tensor([[0.375, 0.25], [0.6875, 0.125]]))
    assert batch.num_spans.tolist() == [2, 0]
    out = model.loss(batch, lambda_temp=2.0, pos_weight=10.0)
    out.total.backward()
    assert out.span > 0 and out.answer > 0  # the grounding row trains the span head, the open row the answer
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head)
    model.projector.zero_grad()
    without = model.loss(collate([(features, example([], "Có."))]), lambda_temp=2.0, pos_weight=10.0)
    without.total.backward()
    assert without.span == 0 and all(p.grad is not None and p.grad.abs().sum() == 0 for p in head)
    model.projector.zero_grad()


def _mixed_rows(data_dir: Path) -> list[dict]:
    """Per clip of the trained fixture: its multiple-choice rows, an open question and a grounding query."""
    rows = json.loads((data_dir / "train.json").read_text(encoding="utf-8"))["data"]
    rows += json.loads((data_dir / "test.json").read_text(encoding="utf-8"))["data"]
    extra = []
    for row in rows[::2]:
        video, spans = row["video_path"], row["spans"]
        extra.append(
            {
                "id": f"{video}-open",
                "question": "Mô tả biển báo.",
                "answer": "Biển báo.",
                "video": video,
                "support_frames": row["support_frames"],
            }
        )
        extra.append({"id": f"{video}-span", "question": "Biển báo ở đâu?", "spans": spans, "video": video})
    return rows + extra


def test_a_mixed_file_validates_trains_resumes_evaluates_and_predicts(trained, cli, tmp_path: Path) -> None:
    mixed = _write_jsonl(tmp_path / "mixed.jsonl", _mixed_rows(trained.data_dir))
    base = [
        "--config",
        "tiny",
        "--set",
        f"encoder={trained.config.encoder}",
        "--set",
        f"llm={trained.config.llm.name}",
    ]
    checked = cli("validate", mixed, "--cache", trained.cache_dir)
    assert checked.code == 0 and "10 open, 10 grounding" in checked.err.replace("\n", " "), checked.err
    run = tmp_path / "run"
    train = [
        "train",
        "--cache",
        trained.cache_dir,
        "--annotations",
        mixed,
        "--out",
        run,
        *base,
        "--set",
        "train.val_fraction=0.3",
    ]
    assert cli(*train, "--epochs", "1").code == 0
    resumed = cli(*train, "--epochs", "2", "--resume")
    assert resumed.code == 0, resumed.err
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {s["epoch"] for s in steps if s["kind"] == "eval"} == {1, 2}
    assert any(s["kind"] == "train" and s["span_loss"] > 0 for s in steps)

    answering = ["--checkpoint", run / "best", "--cache", trained.cache_dir, "--annotations", mixed]
    scored = cli("eval", *answering, "--out", tmp_path / "eval")
    assert scored.code == 0, scored.err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["open_questions"] == 10 and 0 <= metrics["exact_match"] <= metrics["f1"] <= 1
    assert {"accuracy", "span_R@1_iou0.5", "span_mIoU", "span_mAP", "mIoU", "hit@1_1s"} <= set(metrics)
    predictions = [
        json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()
    ]
    kinds = {p["id"]: p for p in predictions}
    opened = next(p for p in predictions if p["kind"] == "open")
    assert isinstance(opened["text"], str) and opened["answer"] == "Biển báo." and "f1" in opened
    for p in predictions:
        assert len(p["windows"]) == 5 and all(0 <= a <= b <= p["duration_s"] for a, b, _ in p["windows"])
    assert metrics["questions"] == len(kinds) == len(_mixed_rows(trained.data_dir))

    submission = tmp_path / "submission.csv"
    predicted = cli("predict", *answering, "--out", submission)
    assert predicted.code == 0, predicted.err
    with submission.open(newline="", encoding="utf-8") as f:
        answers = {row["id"]: row["answer"] for row in csv.DictReader(f)}
    assert all(answers[p["id"]] == p["letter"] for p in predictions if p["kind"] == "choice")
    assert all(answers[p["id"]] == p["text"] for p in predictions if p["kind"] == "open")
    assert all(answers[p["id"]] == "" for p in predictions if p["kind"] == "grounding")

    video = trained.data_dir / "videos" / predictions[0]["video"]
    free = cli(
        "infer", "--checkpoint", run / "best", "--video", video, "--question", "Mô tả biển báo.", "--json"
    )
    assert free.code == 0, free.err
    answer = json.loads(free.out)
    assert answer["letter"] is None and answer["probs"] == {} and len(answer["windows"]) == 5
    assert answer["windows"][0]["score"] >= answer["windows"][-1]["score"]


@pytest.mark.parametrize("fmt", ["qvhighlights", "charades"])
def test_grounding_datasets_validate_load_and_train(trained, tiny, cli, tmp_path: Path, fmt: str) -> None:
    """Files written in each dataset's own format, naming the cached clips by id as those datasets do."""
    from mark1.cache import FeatureCache
    from mark1.stages.evaluate import evaluate
    from mark1.stages.train import train

    cache = FeatureCache(trained.cache_dir)
    keys = sorted(cache.keys())
    if fmt == "qvhighlights":
        lines = [
            {
                "qid": i,
                "query": "a sign appears",
                "vid": Path(k).stem,
                "duration": cache.row(k)["duration_s"],
                "relevant_windows": [[0.5, 2.0]],
            }
            for i, k in enumerate(keys)
        ]
        path = _write_jsonl(tmp_path / "highlight_train.jsonl", lines)
    else:
        path = tmp_path / "charades_sta_train.txt"
        path.write_text("".join(f"{Path(k).stem} 0.5 2.0##a sign appears\n" for k in keys))
    checked = cli("validate", path, "--cache", trained.cache_dir)
    assert checked.code == 0 and f"{len(keys)} questions ({len(keys)} grounding)" in checked.err, checked.err
    result = train(
        tiny.config("train.epochs=1", "train.val_fraction=0.3"), trained.cache_dir, path, tmp_path / "run"
    )
    assert result.steps > 0 and result.best_accuracy is None  # nothing to answer: the answer loss is skipped
    metrics = evaluate(tmp_path / "run" / "best", trained.cache_dir, path).metrics
    assert (
        metrics["span_questions"] == len(keys)
        and 0 <= metrics["span_mIoU"] <= 1
        and "accuracy" not in metrics
    )
