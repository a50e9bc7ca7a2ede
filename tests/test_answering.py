import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mark1.cache import FeatureCache
from mark1.errors import CheckpointError
from mark1.metrics import (
    abs_error,
    hit,
    iou,
    match_count,
    moments,
    position_windows,
    predicted_span,
    summarize,
    top_moment,
)
from mark1.model.mark1 import Mark1
from mark1.stages.evaluate import evaluate, predict


def test_top_moment_and_hits() -> None:
    times = [0.5, 1.5, 2.5, 3.5]
    assert top_moment([0.1, 0.9, 0.9, 0.2], times) == 1.5  # first on ties
    assert hit(1.5, [2.4], 1.0) and not hit(1.5, [2.6], 1.0) and hit(1.5, [9.0, 1.9], 0.5)
    assert abs_error(1.5, [4.0, 2.0]) == pytest.approx(0.5)


def test_moments_are_peaks_above_threshold_best_first() -> None:
    times = [0, 1, 2, 3, 4, 5]
    assert moments([0.1, 0.8, 0.3, 0.6, 0.2, 0.9], times) == [(5.0, 0.9), (1.0, 0.8), (3.0, 0.6)]
    assert moments([0.1, 0.8, 0.3, 0.6, 0.9, 0.2], times) == [(4.0, 0.9), (1.0, 0.8)]  # 0.6 is no peak
    assert moments([0.1, 0.2, 0.3, 0.2, 0.1, 0.0], times) == [(2.0, 0.3)]  # none passes: the top one
    assert moments([0.7, 0.7, 0.1, 0.1, 0.1, 0.1], times) == [(1.0, 0.7)]  # a plateau counts once


def test_one_to_one_matching() -> None:
    assert match_count([1.0, 1.2], [1.1], 1.0) == 1  # one support frame matches one prediction
    assert match_count([1.0, 5.0], [1.5, 4.2], 1.0) == 2
    assert match_count([1.0], [2.5], 1.0) == 0
    assert match_count([], [1.0], 1.0) == 0


def test_spans_and_iou() -> None:
    times = [1.0, 3.0, 5.0, 7.0]
    windows = position_windows(times, 8.0)
    assert windows.tolist() == [[0.0, 2.0], [2.0, 4.0], [4.0, 6.0], [6.0, 8.0]]
    assert predicted_span([0.1, 0.7, 0.9, 0.2], times, 8.0) == (2.0, 6.0)
    assert iou((2.0, 6.0), (3.0, 7.0)) == pytest.approx(3 / 5)
    assert iou((0.0, 1.0), (2.0, 3.0)) == 0.0


def test_summary_hand_computed() -> None:
    rows = [
        {
            "pred": 0,
            "answer": 0,
            "probs": [0.9, 0.1],
            "saliency": [0.1, 0.9, 0.2],
            "times": [1, 3, 5],
            "support_frames": [3.4],
            "spans": [[2.0, 4.0]],
            "duration_s": 6.0,
        },
        {
            "pred": 1,
            "answer": 0,
            "probs": [0.2, 0.5, 0.3],
            "saliency": [0.9, 0.1, 0.1],
            "times": [1, 3, 5],
            "support_frames": [4.9, 5.2],
            "spans": [],
            "duration_s": 6.0,
        },
        {
            "pred": 2,
            "answer": None,
            "probs": [0.1, 0.2, 0.7],
            "saliency": [0.2, 0.2, 0.2],
            "times": [1, 3, 5],
            "support_frames": [],
            "spans": [],
            "duration_s": 6.0,
        },
    ]
    m = summarize(rows)
    assert m["accuracy"] == 0.5 and m["accuracy_by_num_choices"] == {"2": 1.0, "3": 0.0}
    assert m["hit@1_1s"] == 0.5 and m["hit@1_0.5s"] == 0.5
    assert m["top_moment_mae_s"] == pytest.approx((0.4 + 3.9) / 2)
    assert m["precision_1s"] == 0.5 and m["recall_1s"] == pytest.approx(1 / 3)
    assert m["grounded_accuracy"] == 0.5
    assert m["R@1_iou0.5"] == 1.0 and m["mIoU"] == 1.0  # top window [2, 4] is the span exactly


def test_eval_writes_metrics_and_predictions(trained, tmp_path: Path) -> None:
    result = evaluate(
        trained.run_dir / "best", trained.cache_dir, trained.data_dir / "test.json", tmp_path, trained.config
    )
    metrics = json.loads(result.metrics_path.read_text())
    rows = [json.loads(line) for line in result.predictions_path.read_text().splitlines()]
    assert metrics["questions"] == len(rows) > 0 and 0 <= metrics["accuracy"] <= 1
    assert {"hit@1_1s", "f1_1s", "mIoU", "R@1_iou0.5", "accuracy_by_num_choices"} <= set(metrics)
    assert metrics["accuracy"] == pytest.approx(np.mean([r["correct"] for r in rows]))
    assert all(abs(sum(r["probs"]) - 1) < 1e-4 and r["moments"] for r in rows)


def test_predict_answers_every_question_in_order(trained, tmp_path: Path) -> None:
    rows = json.loads((trained.data_dir / "public_test.json").read_text())["data"]
    rows.insert(
        1, {"id": "lost", "question": "q?", "choices": ["A. x", "B. y"], "video_path": "videos/gone.mp4"}
    )
    (tmp_path / "test.json").write_text(json.dumps({"data": rows}, ensure_ascii=False))
    result = predict(
        trained.run_dir / "best",
        trained.cache_dir,
        tmp_path / "test.json",
        tmp_path / "sub.csv",
        trained.config,
    )
    with open(result.submission_path, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["id", "answer"] and [r[0] for r in table[1:]] == [r["id"] for r in rows]
    assert table[2] == ["lost", "A"] and result.num_fallback == 1
    assert all(r[1] in "ABCD" and len(r[1]) == 1 for r in table[1:])


def test_infer_features_equal_the_cached_ones_and_it_answers(trained) -> None:
    model = Mark1.from_pretrained(trained.run_dir / "best", trained.config)
    cache = FeatureCache(trained.cache_dir)
    key = cache.keys()[0]
    clip = model.decode(trained.data_dir / "videos" / key)
    assert torch.equal(model.features(clip), torch.from_numpy(cache[key][0]))
    result = model.answer(
        trained.data_dir / "videos" / key, "Biển báo màu gì?", ["A. Đỏ", "B. Xanh lá", "C. Vàng"]
    )
    assert result.letter in "ABC" and result.answer.startswith(result.letter)
    assert abs(sum(result.probs.values()) - 1) < 1e-4 and len(result.saliency) == len(result.times_s) == 8
    assert set(result.timings_s) == {"decode", "encode", "answer"}
    free = model.answer(trained.data_dir / "videos" / key, "Mô tả video.", max_new_tokens=4)
    assert free.letter is None and isinstance(free.answer, str)


def test_checkpoint_for_another_encoder_is_refused(trained, tiny, tmp_path: Path) -> None:
    from mark1.tiny import TinySizes, write_tiny_backbones

    other, _ = write_tiny_backbones(tmp_path, TinySizes(seed=7, warmup_steps=0))
    cfg = trained.config
    with pytest.raises(CheckpointError, match="encoder_fingerprint"):
        Mark1.from_pretrained(
            trained.run_dir / "best", type(cfg).from_dict({**cfg.to_dict(), "encoder": str(other)})
        )


def test_infer_cli_json_and_timeline(trained, cli, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    video = next((trained.data_dir / "videos").glob("*.mp4"))
    result = cli(
        "infer",
        "--checkpoint",
        trained.run_dir / "best",
        "--video",
        video,
        "--question",
        "Biển báo nằm ở bên nào?",
        "--choice",
        "A. Bên trái",
        "--choice",
        "B. Bên phải",
        "--json",
        "--encoder",
        trained.config.encoder,
        "--llm",
        trained.config.llm.name,
        "--timeline",
        tmp_path / "t.png",
    )
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert answer["letter"] in ("A", "B") and set(answer["probs"]) == {"A", "B"}
    assert answer["moments"][0]["time_s"] >= 0 and (tmp_path / "t.png").stat().st_size > 1000
