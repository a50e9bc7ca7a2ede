import json
import math
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mark1.annotations import load_annotations
from mark1.errors import AnnotationError
from mark1.matching import match_videos, require_valid

DATA = Path(__file__).parent / "data"


def _rows() -> list[dict]:
    return json.loads((DATA / "roadbuddy_train_sample.json").read_text(encoding="utf-8"))["data"]


def test_roadbuddy_train_file_loads_with_letters_and_answers() -> None:
    records, issues = load_annotations(DATA / "roadbuddy_train_sample.json")
    assert [r.id for r in records] == ["train_0001", "train_0002", "train_0003", "train_0004"]
    assert records[1].choices[0] == "A. TP. Hồ Chí Minh" and records[1].answer == 0
    assert len(records[2].choices) == 3 and records[2].letter == "C"  # "C. ..., D. ..." stays one choice
    assert records[0].support_frames == [4.4274] and records[0].video.startswith("train/videos/")
    assert [i.level for i in issues] == ["warning"] and "_unused_" in issues[0].message


def test_public_test_file_has_no_answers() -> None:
    records, issues = load_annotations(DATA / "roadbuddy_public_test_sample.json")
    assert [r.answer for r in records] == [None, None] and not issues
    with pytest.raises(AnnotationError, match="no 'answer'"):
        require_valid(DATA / "roadbuddy_public_test_sample.json", for_training=True)


@pytest.mark.parametrize("fmt", ["list.json", "jsonl", "parquet", "csv"])
def test_every_format_gives_the_same_records(tmp_path: Path, fmt: str) -> None:
    rows = [{k: v for k, v in r.items() if k != "_unused_"} for r in _rows()]
    path = tmp_path / f"ann.{fmt}"
    if fmt == "list.json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        import csv

        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            for r in rows:
                writer.writerow(
                    {k: json.dumps(v, ensure_ascii=False) if isinstance(v, list) else v for k, v in r.items()}
                )
    expected, _ = load_annotations(DATA / "roadbuddy_train_sample.json")
    got, issues = load_annotations(path)
    assert not [i for i in issues if i.level == "error"]
    assert [(r.id, r.choices, r.answer, r.support_frames, r.video) for r in got] == [
        (r.id, r.choices, r.answer, r.support_frames, r.video) for r in expected
    ]


def test_text_is_nfc_and_answers_may_be_letters(tmp_path: Path) -> None:
    decomposed = unicodedata.normalize("NFD", "Có biển cấm dừng đỗ không?")
    rows = [
        {
            "id": "a",
            "question": decomposed,
            "choices": ["A. Có", "B. Không"],
            "answer": "B",
            "video_path": "v.mp4",
        },
        {
            "id": "b",
            "question": "q",
            "choices": ["Đúng", "Sai", "Không rõ"],
            "answer": "Sai",
            "video_path": "v.mp4",
        },
        {
            "id": "c",
            "question": "q",
            "choices": [f"{chr(65 + i)}. {t}" for i, t in enumerate("abcdabcd")],
            "answer": "H. d",
            "video_path": "v.mp4",
        },
    ]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    records, issues = load_annotations(path)
    assert records[0].question == unicodedata.normalize("NFC", decomposed) and records[0].answer == 1
    assert records[1].choices == ["A. Đúng", "B. Sai", "C. Không rõ"] and records[1].answer == 1
    assert len(records[2].choices) == 8 and records[2].answer == 7
    assert any(i.id == "c" and i.level == "warning" and "repeat" in i.message for i in issues)


def test_every_bad_row_is_reported_with_its_row_and_id(tmp_path: Path) -> None:
    rows = [
        {"id": "ok", "question": "q", "choices": ["A. x", "B. y"], "answer": "A. x", "video_path": "v.mp4"},
        {"id": "no_q", "choices": ["A. x", "B. y"], "video_path": "v.mp4"},
        {
            "id": "bad_answer",
            "question": "q",
            "choices": ["A. x", "B. y"],
            "answer": "C. z",
            "video_path": "v.mp4",
        },
        {"id": "one_choice", "question": "q", "choices": ["A. x"], "video_path": "v.mp4"},
        {
            "id": "nan",
            "question": "q",
            "choices": ["A. x", "B. y"],
            "support_frames": [math.nan],
            "video_path": "v.mp4",
        },
        {"id": "ok", "question": "q", "choices": ["A. x", "B. y"], "video_path": "v.mp4"},
        {"question": "no id", "choices": ["A. x", "B. y"], "video_path": "v.mp4"},
        ["not", "an", "object"],
        {"id": "no_video", "question": "q", "choices": ["A. x", "B. y"]},
        {
            "id": "bad_span",
            "question": "q",
            "choices": ["A. x", "B. y"],
            "spans": [[3, 1]],
            "video_path": "v.mp4",
        },
    ]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows, allow_nan=True), encoding="utf-8")
    records, issues = load_annotations(path)
    errors = {(i.row, i.id) for i in issues if i.level == "error"}
    assert errors == {
        (2, "no_q"),
        (3, "bad_answer"),
        (4, "one_choice"),
        (5, "nan"),
        (6, "ok"),
        (7, "?"),
        (8, "?"),
        (9, "no_video"),
        (10, "bad_span"),
    }
    with pytest.raises(AnnotationError, match="9 problem"):
        require_valid(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("x.json", b"\xff\xfe\x00garbage"),
        ("x.json", b"{not json"),
        ("x.json", b'{"data": 3}'),
        ("x.parquet", b"PAR1 not really"),
        ("x.jsonl", b'{"id": 1}\n{oops'),
    ],
)
def test_unreadable_files_are_one_clear_error(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AnnotationError, match=str(path)):
        load_annotations(path)


def test_videos_match_by_path_suffix_then_unique_name() -> None:
    records, _ = load_annotations(DATA / "roadbuddy_train_sample.json")
    keys = [
        "a1b2c3d4_101_clip_002_0008_0018_Y.mp4",
        "other/e5f6a7b8_202_clip_001_0000_0009_Y.mp4",
        "x/e5f6a7b8_202_clip_001_0000_0009_Y.mp4",
    ]
    issues = match_videos(records, keys)
    assert records[0].key == keys[0]  # the annotation's "train/videos/" prefix is not part of the key
    assert {i.id for i in issues} == {"train_0003", "train_0004"}  # two cached files share that name
    assert "matches several" in issues[0].message
    issues = match_videos(records, ["train/videos/e5f6a7b8_202_clip_001_0000_0009_Y.mp4"])
    assert records[2].key == "train/videos/e5f6a7b8_202_clip_001_0000_0009_Y.mp4"
    assert {i.id for i in issues} == {"train_0001", "train_0002"} and "not in the cache" in issues[0].message
