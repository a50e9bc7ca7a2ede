"""Annotation records against a feature cache: which cache key each question's video is, whether its times
lie inside the clip, and the one validation that train, eval and predict run before any work."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path, PurePosixPath

from mark1.annotations import Issue, QARecord, load_annotations
from mark1.errors import AnnotationError


def match_videos(records: list[QARecord], keys: list[str]) -> list[Issue]:
    """Set each record's cache `key`: exact relative path, then a path-suffix match, then a unique file name,
    then a unique file name without its extension (QVHighlights' `vid`, Charades-STA's video id)."""
    by_name: dict[str, list[str]] = defaultdict(list)
    by_stem: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        by_name[PurePosixPath(key).name].append(key)
        by_stem[PurePosixPath(key).stem].append(key)
    exact = set(keys)
    issues = []
    for record in records:
        video = record.video.replace("\\", "/").lstrip("./")
        if video in exact:
            record.key = video
            continue
        name = PurePosixPath(video).name
        candidates = by_name.get(name) or by_stem.get(name, [])
        suffix = [k for k in candidates if video.endswith("/" + k) or k.endswith("/" + video)]
        chosen = suffix if len(suffix) == 1 else candidates
        if len(chosen) == 1:
            record.key = chosen[0]
        elif not chosen:
            issues.append(
                Issue(
                    record.row,
                    record.id,
                    f"video {record.video!r} is not in the cache; "
                    "run `mark1 extract` over the directory that holds it",
                )
            )
        else:
            issues.append(
                Issue(
                    record.row,
                    record.id,
                    f"video {record.video!r} matches several cached videos: "
                    f"{', '.join(chosen[:4])}; use its path relative to --videos",
                )
            )
    return issues


def check_against_cache(records: list[QARecord], cache) -> list[Issue]:
    """Match videos to cache keys and check support frames and spans lie inside each clip."""
    issues = match_videos(records, cache.keys())
    for record in records:
        if record.key is None:
            continue
        duration = cache.row(record.key)["duration_s"]
        late = [t for t in record.support_frames if t > duration + 0.5]
        if late:
            issues.append(
                Issue(
                    record.row,
                    record.id,
                    f"support frames {late} lie after the end of {record.key} ({duration:.2f} s)",
                )
            )
        outside = [list(s) for s in record.spans if s[0] >= duration]
        if outside:
            message = f"spans {outside} start after the end of {record.key} ({duration:.2f} s)"
            issues.append(Issue(record.row, record.id, message))
        elif any(end > duration + 0.5 for _, end in record.spans):
            message = f"spans end after {record.key} ({duration:.2f} s); they count up to its end"
            issues.append(Issue(record.row, record.id, message, "warning"))
    return issues


def require_valid(path: Path, cache=None, for_training: bool = False) -> list[QARecord]:
    """Load, validate (against `cache` when given) and return the records, or raise one AnnotationError.
    `for_training`: every row must hold something to learn (an answer, support frames or spans)."""
    records, issues = load_annotations(path)
    if cache is not None:
        issues += check_against_cache(records, cache)
    if for_training:
        issues += [
            Issue(r.row, r.id, "nothing to train on: no 'answer', 'support_frames' or 'spans'")
            for r in records
            if not r.learnable
        ]
    errors = [i for i in issues if i.level == "error"]
    if errors:
        shown = "; ".join(str(e) for e in errors[:5])
        more = f" (and {len(errors) - 5} more; run `mark1 validate {path}`)" if len(errors) > 5 else ""
        raise AnnotationError(f"{path}: {len(errors)} problem(s): {shown}{more}")
    return records
