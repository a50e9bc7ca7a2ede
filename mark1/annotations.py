"""Question annotations: RoadBuddy JSON, JSON lists, JSONL, Parquet and CSV, and the grounding datasets
QVHighlights (JSONL) and Charades-STA (text lines) → one normalized record type.

A record is one of three kinds: multiple choice (choices, answer a choice), open (no choices, a free-text
answer or none yet), grounding (no choices, no answer: a query to locate in time, by its spans). A row may
say its `kind`; without one, a row with choices is multiple choice, one with spans and no answer grounding,
any other open.

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

KNOWN_KEYS = {
    "id",
    "question",
    "choices",
    "answer",
    "support_frames",
    "spans",
    "video_path",
    "video",
    "kind",
    "type",
}
# QVHighlights' keys; its saliency scores (per 2-second clip, from three annotators) are not used.
QVHIGHLIGHTS_KEYS = {
    "qid",
    "query",
    "vid",
    "duration",
    "relevant_windows",
    "relevant_clip_ids",
    "saliency_scores",
}
KINDS = ("choice", "open", "grounding")
_UNREADABLE = "_unreadable"  # a line of a line-based format that could not be read: a row error
_CHARADES = re.compile(r"^(\S+)\s+([0-9.]+)\s+([0-9.]+)\s*##(.*)$")
_CHOICE = re.compile(r"^\s*([A-Z])\s*[.)]\s*(.*)$", re.DOTALL)


@dataclass
class QARecord:
    """One question about one video."""

    id: str
    video: str  # as written in the annotation file
    question: str
    choices: list[str]  # "A. text", lettered by position; empty for open and grounding rows
    answer: int | None = None  # index into choices; None for test files and rows without choices
    support_frames: list[float] = field(default_factory=list)  # seconds
    spans: list[tuple[float, float]] = field(default_factory=list)  # seconds
    row: int = 0  # 1-based position in the file, for messages
    key: str | None = None  # the cache key the video matched
    answer_text: str | None = None  # the free-text answer of an open row
    kind: str = "choice"  # choice, open or grounding: see the module's docstring
    type: str | None = None  # what the question asks about ("side", "when", ...): eval reports each

    @property
    def letter(self) -> str | None:
        return None if self.answer is None else LETTERS[self.answer]

    @property
    def target(self) -> str | None:
        """The text the LLM is trained to give: the chosen choice ("B. Sai") or the free answer."""
        return self.choices[self.answer] if self.answer is not None else self.answer_text

    @property
    def learnable(self) -> bool:
        """Something to train on: an answer, support frames or spans."""
        return self.target is not None or bool(self.support_frames or self.spans)


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
    """The raw rows of an annotation file, by extension (`.txt`: Charades-STA), QVHighlights rows recognised
    by their keys; AnnotationError when the file cannot be read at all."""
    return [_from_qvhighlights(row) for row in _read_file(path)]


def _read_file(path: Path) -> list[Any]:
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
        if suffix == ".txt":
            return _charades_rows(text, path)
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


def _from_qvhighlights(raw: Any) -> Any:
    """A QVHighlights line (`qid, query, vid, duration, relevant_windows`; recognised by `query` or
    `relevant_windows`) as a grounding row; other rows pass through."""
    if not (isinstance(raw, dict) and ("query" in raw or "relevant_windows" in raw)):
        return raw
    missing = [k for k in ("qid", "query", "vid") if raw.get(k) in (None, "")]
    if missing:
        return {_UNREADABLE: f"a QVHighlights line needs 'qid', 'query' and 'vid'; missing {missing}"}
    unknown = {k: v for k, v in raw.items() if k not in QVHIGHLIGHTS_KEYS}
    spans = raw.get("relevant_windows")
    return {
        **unknown,
        "id": raw["qid"],
        "question": raw["query"],
        "video": raw["vid"],
        "spans": spans,
        "kind": "grounding",
    }


def _charades_rows(text: str, path: Path) -> list[dict[str, Any]]:
    """Charades-STA lines, `VIDEO START END##SENTENCE` (seconds), as grounding rows with ids VIDEO_LINE."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _CHARADES.match(line.strip())
        try:
            video, start, end, sentence = match.groups()  # type: ignore[union-attr]
            span = [float(start), float(end)]
        except (AttributeError, ValueError):  # no match, or a number such as "1.2.3"
            message = f"line {number} is not a Charades-STA line 'VIDEO START END##SENTENCE': {line[:80]!r}"
            rows.append({_UNREADABLE: message})
            continue
        rows.append(
            {
                "id": f"{video}_{number}",
                "question": sentence,
                "video": video,
                "spans": [span],
                "kind": "grounding",
            }
        )
    return rows


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
    if _UNREADABLE in raw:
        return None, [Issue(row, "?", raw[_UNREADABLE])]
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
    kind = raw.get("kind")
    if kind is not None and kind not in KINDS:
        error(f"'kind' must be one of {', '.join(KINDS)}, got {str(kind)[:40]!r}")
    choices = _maybe_json(raw.get("choices"))
    answer_text = None
    if choices is None or (isinstance(choices, str) and not choices.strip()) or choices == []:
        choices = []  # an open question, or a grounding query
        if kind == "choice":
            error("'kind' is choice but the row has no 'choices'")
        elif kind == "grounding" and raw.get("answer") not in (None, ""):
            issues.append(Issue(row, name, "a grounding query's 'answer' is not used", "warning"))
        else:
            answer_text = _parse_free_answer(raw.get("answer"), error)
    elif kind in ("open", "grounding"):
        error(f"'kind' is {kind} but the row has 'choices'")
        choices = None
    elif (
        not isinstance(choices, list)
        or not 2 <= len(choices) <= len(LETTERS)
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        error(
            f"'choices' must be a list of 2 to {len(LETTERS)} non-empty strings (or none, for an open "
            f"question), got {str(choices)[:80]!r}"
        )
        choices = None
    else:
        choices = letter_choices(choices, row, name, issues)
    answer = _parse_answer(raw.get("answer"), choices, error) if choices else None
    support = _parse_numbers(_maybe_json(raw.get("support_frames")), "support_frames", error)
    spans = _parse_spans(_maybe_json(raw.get("spans")), error)
    if any(i.level == "error" for i in issues):
        return None, issues
    if kind is None:
        kind = "choice" if choices else "grounding" if answer_text is None and spans else "open"
    if any(start == end for start, end in spans):
        issues.append(Issue(row, name, "a span of zero length never overlaps a window (IoU 0)", "warning"))
    qtype = raw.get("type")
    if qtype is not None and not (isinstance(qtype, str) and qtype.strip()):
        issues.append(
            Issue(row, name, f"'type' must be a short text, got {str(qtype)[:40]!r}; ignored", "warning")
        )
        qtype = None
    record = QARecord(
        qid,
        _nfc(video),
        _nfc(question),
        choices,
        answer,
        support,
        spans,
        row,
        None,
        answer_text,
        kind,
        qtype and _nfc(qtype),
    )
    return record, issues


def _parse_free_answer(value: Any, error) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        error(f"'answer' of an open question must be text, got {value!r}")
        return None
    if re.fullmatch(r"\s*[A-Z]\s*[.)]?\s*", value):  # a multiple-choice file whose choices went missing
        error(
            f"'answer' is the letter {value.strip()!r} but the row has no 'choices' (a missing or misspelled "
            "column?); give the choices, or write an open question's answer in words"
        )
        return None
    return _nfc(value)


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
