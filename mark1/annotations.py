"""Question annotations: RoadBuddy JSON, JSON lists, JSONL, Parquet and CSV → one normalized record type.

Loading never raises for a bad row: every problem becomes an `Issue` naming the row and id, so
`mark1 validate` can report them all at once; `require_valid` turns errors into one AnnotationError.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mark1.errors import AnnotationError
from mark1.prompt import LETTERS

KNOWN_KEYS = {"id", "question", "choices", "answer", "support_frames", "spans", "video_path", "video"}
_CHOICE = re.compile(r"^\s*([A-Z])\s*[.)]\s*(.*)$", re.DOTALL)


@dataclass
class QARecord:
    """One question about one video."""

    id: str
    video: str  # as written in the annotation file
    question: str
    choices: list[str]  # "A. text", lettered by position
    answer: int | None = None  # index into choices; None for test files
    support_frames: list[float] = field(default_factory=list)  # seconds
    spans: list[tuple[float, float]] = field(default_factory=list)  # seconds
    row: int = 0  # 1-based position in the file, for messages
    key: str | None = None  # the cache key the video matched

    @property
    def letter(self) -> str | None:
        return None if self.answer is None else LETTERS[self.answer]


@dataclass
class Issue:
    row: int
    id: str
    message: str
    level: str = "error"  # or "warning"

    def __str__(self) -> str:
        return f"row {self.row} (id {self.id}): {self.message}"


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The raw rows of an annotation file, by extension; AnnotationError when the file cannot be read at all."""
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path).to_pylist()
        text = path.read_bytes().decode("utf-8-sig")
        if suffix == ".jsonl":
            rows = []
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise AnnotationError(f"{path} line {number} is not valid JSON ({err.msg})") from err
            return rows
        if suffix == ".csv":
            import csv
            import io

            return list(csv.DictReader(io.StringIO(text)))
        data = json.loads(text)
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path} is not UTF-8 text (byte {err.start}); re-save it as UTF-8") from err
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path} is not valid JSON (line {err.lineno}: {err.msg})") from err
    except (OSError, pa.ArrowException) as err:
        raise AnnotationError(f"cannot read {path}: {err}") from err
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        return data["data"]
    if isinstance(data, list):
        return data
    raise AnnotationError(f"{path}: expected a RoadBuddy object with a 'data' list, or a list of questions")


def _maybe_json(value: Any) -> Any:
    """CSV cells hold lists as JSON strings."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _parse_row(raw: Any, row: int) -> tuple[QARecord | None, list[Issue]]:
    if not isinstance(raw, dict):
        return None, [Issue(row, "?", f"expected an object, got {type(raw).__name__}")]
    qid = raw.get("id")
    ok_id = isinstance(qid, (str, int)) and not isinstance(qid, bool) and str(qid).strip()
    qid = str(qid) if ok_id else None
    name = qid or "?"
    issues: list[Issue] = []

    def error(message: str) -> None:
        issues.append(Issue(row, name, message))

    if qid is None:
        error(f"'id' must be a non-empty string or integer, got {raw.get('id')!r}")
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        error("missing or empty 'question'")
    video = raw.get("video_path", raw.get("video"))
    if not isinstance(video, str) or not video.strip():
        error("missing 'video_path' (or 'video')")
    choices = _maybe_json(raw.get("choices"))
    if (
        not isinstance(choices, list)
        or not 2 <= len(choices) <= len(LETTERS)
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        error(f"'choices' must be a list of 2 to {len(LETTERS)} non-empty strings, got {str(choices)[:80]!r}")
        choices = None
    else:
        choices = letter_choices(choices, row, name, issues)
    answer = _parse_answer(raw.get("answer"), choices, error)
    support = _parse_numbers(_maybe_json(raw.get("support_frames")), "support_frames", error)
    spans = _parse_spans(_maybe_json(raw.get("spans")), error)
    if any(i.level == "error" for i in issues):
        return None, issues
    record = QARecord(qid, _nfc(video), _nfc(question), choices, answer, support, spans, row)
    return record, issues


def letter_choices(choices: list[str], row: int, qid: str, issues: list[Issue]) -> list[str]:
    """Normalise to "A. text" by position; a choice's own text may contain ". " ("TP. Hồ Chí Minh")."""
    out = []
    for i, choice in enumerate(choices):
        choice = _nfc(choice)
        match = _CHOICE.match(choice)
        text = match.group(2).strip() if match else choice
        if match and match.group(1) != LETTERS[i]:
            issues.append(
                Issue(
                    row,
                    qid,
                    f"choice {i + 1} is lettered {match.group(1)}, re-lettered {LETTERS[i]}",
                    "warning",
                )
            )
        out.append(f"{LETTERS[i]}. {text}")
    texts = [c[3:] for c in out]
    if len(set(texts)) < len(texts):
        issues.append(Issue(row, qid, f"{len(texts)} choices repeat some texts; kept as given", "warning"))
    return out


def _parse_answer(value: Any, choices: list[str] | None, error) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()) or choices is None:
        return None
    if not isinstance(value, str):
        error(f"'answer' must be a string (a choice or its letter), got {value!r}")
        return None
    answer = _nfc(value)
    letters = {c[0]: i for i, c in enumerate(choices)}
    if answer.rstrip(".") in letters and len(answer.rstrip(".")) == 1:
        return letters[answer.rstrip(".")]
    match = _CHOICE.match(answer)
    if match and match.group(1) in letters and choices[letters[match.group(1)]][3:] == match.group(2).strip():
        return letters[match.group(1)]
    by_text = [i for i, c in enumerate(choices) if c[3:] == answer or c == answer]
    if len(by_text) == 1:
        return by_text[0]
    error(f"answer {value!r} is not one of the choices {choices}")
    return None


def _parse_numbers(value: Any, name: str, error) -> list[float]:
    if value is None or value == "":
        return []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        error(f"'{name}' must be a list of seconds, got {str(value)[:80]!r}")
        return []
    if not all(math.isfinite(v) and v >= 0 for v in value):
        error(f"'{name}' must hold finite seconds >= 0, got {value}")
        return []
    return [float(v) for v in value]


def _parse_spans(value: Any, error) -> list[tuple[float, float]]:
    if value is None or value == "":
        return []
    ok = isinstance(value, list) and all(
        isinstance(s, (list, tuple))
        and len(s) == 2
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in s)
        and 0 <= s[0] <= s[1]
        for s in value
    )
    if not ok:
        error(f"'spans' must be a list of [start, end] seconds with start <= end, got {str(value)[:80]!r}")
        return []
    return [(float(s), float(e)) for s, e in value]


def load_annotations(path: Path) -> tuple[list[QARecord], list[Issue]]:
    """Every parseable record of `path`, and every problem found (row errors, duplicate ids, unknown keys)."""
    rows = read_rows(path)
    records, issues = [], []
    unknown: set[str] = set()
    for number, raw in enumerate(rows, 1):
        record, row_issues = _parse_row(raw, number)
        issues += row_issues
        if isinstance(raw, dict):
            unknown |= {str(k) for k in raw if k not in KNOWN_KEYS}
        if record is not None:
            records.append(record)
    seen: dict[str, int] = {}
    for record in records:
        if record.id in seen:
            issues.append(Issue(record.row, record.id, f"duplicate id (first at row {seen[record.id]})"))
        seen.setdefault(record.id, record.row)
    if unknown:
        issues.append(Issue(0, "-", f"unknown keys ignored: {', '.join(sorted(unknown))}", "warning"))
    if not rows:
        issues.append(Issue(0, "-", f"{path} holds no questions"))
    return records, issues
