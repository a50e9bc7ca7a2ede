"""Mark-1 as an lmms-eval model: `lmms-eval --model mark1 --model_args pretrained=runs/NAME/best,cache=cache/`.

The only module that imports lmms_eval (`pip install -e ".[lmms]"`); `import mark1` never loads it. lmms-eval
finds the model through the `lmms_eval.models` entry point, which names `manifest` below.

How lmms-eval's requests become Mark-1 questions (the answering itself is `mark1 eval`'s own code):
- loglikelihood: lmms-eval sends one (context, continuation) request per choice; Mark-1 ranks all the choices
  of a question after ONE prompt holding the question and every lettered choice. The requests of one doc
  (task, split, doc_id, context) are grouped; the group's continuations, ordered by the request's `idx` (the
  choice's position), are its choices: a continuation in the "B. text" form is kept, a bare text is lettered
  by its position, and a bare letter ("B", "(B)") takes its text from the context's own option line for that
  letter ("B. text", "(B) text", "B) text", "B: text"; the last such line, nearest the question asked).
  Each request gets the log-likelihood Mark-1 gives its whole lettered choice (its tokens and the end of
  turn, after the shared prompt), and is_greedy when that choice is the argmax.
- the question: the doc's own field when `question_key` names one (exact); else the context up to its
  options block, the first line that is one of the choices (with or without its letter), since Mark-1 writes
  the options and its own instruction itself. A context without option lines is the question whole. Media
  placeholders (<image>, <video>) are dropped; a pre-prompt before the question stays part of it.
- generate_until: the question as above (no choices), greedy KV-cached generation of at most the request's
  `max_new_tokens` (default `answer.max_new_tokens`), cut at the first `until` string.
- the video: `doc_to_visual(doc)`, a path (or a one-path list). With `cache`, a video matched to a cache key
  as `mark1 eval` matches one (relative path, path suffix, unique name, unique stem) reads its cached
  features; any other is decoded and encoded as `mark1 infer` does.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import unicodedata
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from mark1.annotations import QARecord, letter_choices
from mark1.cache import FeatureCache
from mark1.errors import AnnotationError, ConfigError
from mark1.matching import match_videos
from mark1.model.checkpoint import Checkpoint
from mark1.model.mark1 import Mark1
from mark1.model.video_qa import Answer

if TYPE_CHECKING:
    from lmms_eval.models.registry_v2 import ModelManifest

log = logging.getLogger(__name__)


def manifest() -> ModelManifest:
    """lmms-eval's entry point payload: the model's name and where its class is (imported when asked for).

    A function, and its import inside: importing `lmms_eval.models` builds lmms-eval's registry, which loads
    this entry point, so a module-level import would find this module half-initialised."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="mark1", simple_class_path="mark1.lmms.Mark1LMM")


_BARE_LETTER = re.compile(r"^\(?([A-Z])\)?[.:]?$")  # a continuation that is only a letter: "B", "(B)", "B."
_OPTION_LINE = re.compile(r"^\(?([A-Z])\s*[.):]\s*(.+)$")  # "B. text", "(B) text", "B) text", "B: text"
_MEDIA = re.compile(r"<(?:image|video)>")  # lmms-eval's placeholders for a visual in the context


def _plain(text: str) -> str:
    """Text compared loosely: NFC, case-folded, spaces collapsed."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def choices_of(continuations: list[str], context: str) -> list[str]:
    """The lettered choices ("A. text") a doc's continuations name, in order (see the module's docstring)."""
    stripped = [unicodedata.normalize("NFC", c).strip() for c in continuations]
    letters = [_BARE_LETTER.match(c) for c in stripped]
    if not all(letters):
        return letter_choices(stripped, 0, "-", [])
    options: dict[str, str] = {}
    for line in context.splitlines():
        found = _OPTION_LINE.match(line.strip())
        if found:
            options[found.group(1)] = found.group(2).strip()  # the last line of a letter wins
    choices = []
    for match in letters:
        letter = match.group(1)
        if letter not in options:
            raise AnnotationError(
                f"lmms-eval continuation {letter!r} is a bare letter, but the context has no option line "
                f"'{letter}. text' to take its text from; pass the choices' texts as continuations"
            )
        choices.append(f"{letter}. {unicodedata.normalize('NFC', options[letter])}")
    return choices


def question_of(context: str, choices: list[str]) -> str:
    """The question inside an lmms-eval context: what precedes its options block (see the module's docstring)."""
    lines = _MEDIA.sub("", unicodedata.normalize("NFC", context)).splitlines()
    wanted = {_plain(c) for c in choices} | {_plain(c[3:]) for c in choices}
    starts = [i for i, line in enumerate(lines) if _is_option(line, wanted)]
    question = "\n".join(lines[: min(starts)] if starts else lines).strip()
    return question or "\n".join(lines).strip()  # a context of options alone: keep it all


def _is_option(line: str, wanted: set[str]) -> bool:
    found = _OPTION_LINE.match(line.strip())
    return _plain(line) in wanted or (found is not None and _plain(found.group(2)) in wanted)


def cut_at(text: str, until: str | list[str] | None) -> str:
    """`text` up to the first of the stop strings."""
    stops = [until] if isinstance(until, str) else list(until or [])
    for stop in stops:
        if stop:
            text = text.split(stop, 1)[0]
    return text


class Mark1LMM(lmms):
    """A Mark-1 checkpoint answering lmms-eval's video questions, one question at a time.

    model_args: `pretrained` (a checkpoint directory, or a Hub id), `cache` (a Mark-1 feature cache of these
    videos; optional), `device_map` (Mark-1's `answer.device_map`, items separated by `;` since lmms-eval
    splits model_args at commas: `encoder=cuda:0;projector=cuda:0;llm=cuda:1`), `question_key` (the doc field
    holding the bare question), `max_new_tokens`. lmms-eval's `--device` places every part on one device when
    no device_map is given. `batch_size` is accepted: Mark-1 answers one question per call, all its choices
    in one batch over the prompt's KV cache.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        cache: str | None = None,
        device_map: str | None = None,
        question_key: str | None = None,
        max_new_tokens: int | None = None,
        device: str | None = None,
        batch_size: int | str | None = 1,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        cfg = Checkpoint.open(pretrained).config
        placement = device_map.replace(";", ",") if device_map else None
        if placement is None and device:
            placement = ",".join(f"{part}={device}" for part in ("encoder", "projector", "llm"))
        answer = cfg.answer
        if placement is not None:
            answer = dataclasses.replace(answer, device_map=placement)
        if max_new_tokens is not None:
            answer = dataclasses.replace(answer, max_new_tokens=int(max_new_tokens))
        cfg = dataclasses.replace(cfg, answer=answer)
        self.mark1 = Mark1.from_pretrained(pretrained, cfg)
        self.cache = FeatureCache(cache) if cache else None
        # Features of another encoder or sampling would mean nothing to the projector.
        if self.cache is not None:
            self.cache.spec.check_compatible(self.mark1.spec, self.cache.path)
        self.question_key = question_key
        if batch_size not in (None, 1, "1"):
            log.info(
                "batch_size=%s: Mark-1 answers one question per call, its choices in one batch", batch_size
            )
        # The last video's features, reused by its next questions (a doc's requests come together).
        self._features: dict[str, tuple[torch.Tensor, float]] = {}

    # -- lmms-eval's interface --------------------------------------------------------------------------

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """One (log-likelihood, is_greedy) per request; a doc's requests scored together (module docstring)."""
        groups: dict[Hashable, list[int]] = {}
        for i, request in enumerate(requests):
            if len(request.args) < 6:
                raise ConfigError(
                    "Mark-1 scores a choice only with its video and question; the task asks for a "
                    "context-free log-likelihood (acc_mutual_info): leave that metric out"
                )
            context, _, _, doc_id, task, split = request.args[:6]
            groups.setdefault((task, split, doc_id, context), []).append(i)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        for (task, split, doc_id, context), members in groups.items():
            members.sort(key=lambda i: requests[i].idx)
            doc = self.task_dict[task][split][doc_id]
            continuations = [self._continuation(requests[i].args[1], doc) for i in members]
            distinct = list(dict.fromkeys(continuations))  # repeats of a request ask the same choice again
            if len(distinct) < 2:
                raise AnnotationError(
                    f"{task} doc {doc_id}: Mark-1 ranks two or more choices, this doc's loglikelihood requests "
                    f"give {len(distinct)}; use a multiple-choice task (output_type: multiple_choice)"
                )
            choices = choices_of(distinct, context)
            question = self._question(context, choices, doc)
            out = self._answer(requests[members[0]].args[2], doc, question, choices)
            for i, continuation in zip(members, continuations, strict=True):
                k = distinct.index(continuation)
                results[i] = (out.logprobs[k], k == out.index)
        return results  # type: ignore[return-value]  # every request belongs to one group

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """The free-text answer of each request, greedy, cut at its `until` strings."""
        texts = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args[:6]
            gen_kwargs = dict(gen_kwargs or {})
            if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0) > 0:
                log.warning("%s doc %s: Mark-1 generates greedily, sampling is not used", task, doc_id)
            doc = self.task_dict[task][split][doc_id]
            limit = int(gen_kwargs.get("max_new_tokens") or self.mark1.cfg.answer.max_new_tokens)
            out = self._answer(doc_to_visual, doc, self._question(context, [], doc), [], limit)
            texts.append(cut_at(out.text, gen_kwargs.get("until")).strip())
        return texts

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise ConfigError("Mark-1 answers one turn per question; this task asks for multi-round generation")

    # -- the question, the video, the answer ------------------------------------------------------------

    @staticmethod
    def _continuation(target: str | Callable[[dict], Any], doc: dict) -> str:
        """A multiple_choice task sends the continuation's text, a loglikelihood task its doc_to_target."""
        value = target if isinstance(target, str) else target(doc)
        return str(value)

    def _question(self, context: str, choices: list[str], doc: dict) -> str:
        if self.question_key is None:
            return question_of(context, choices)
        if self.question_key not in doc:
            raise AnnotationError(
                f"question_key={self.question_key!r} is not a field of the task's docs "
                f"(they have {', '.join(sorted(map(str, doc))[:12])}); name one, or leave question_key out"
            )
        return unicodedata.normalize("NFC", str(doc[self.question_key])).strip()

    def _answer(
        self,
        doc_to_visual: Callable[[dict], Any],
        doc: dict,
        question: str,
        choices: list[str],
        max_new_tokens: int | None = None,
    ) -> Answer:
        features, duration = self._video_features(self._video_path(doc_to_visual(doc)))
        limit = max_new_tokens or self.mark1.cfg.answer.max_new_tokens
        out = self.mark1.model.answer(features, question, choices, duration_s=duration, max_new_tokens=limit)
        if out.truncated:
            log.warning("question %r: cut to the checkpoint's prompt token caps", question[:60])
        return out

    @staticmethod
    def _video_path(visual: Any) -> str:
        """The one video a doc names: doc_to_visual gives a path or a list holding one."""
        videos = list(visual) if isinstance(visual, (list, tuple)) else [visual]
        if len(videos) != 1 or not isinstance(videos[0], (str, Path)):
            raise AnnotationError(
                f"Mark-1 answers about one video file per question; doc_to_visual gave {videos!r:.200}"
            )
        return str(videos[0])

    def _video_features(self, video: str) -> tuple[torch.Tensor, float]:
        """(T', H', W', D) float16 features and the clip's duration: cached where the cache holds the video,
        else decoded and encoded (stage one's exact code). The last video's are kept for its next question."""
        if video not in self._features:
            key = self._cache_key(video)
            if key is not None:
                features, _ = self.cache[key]
                found = (torch.from_numpy(features), float(self.cache.row(key)["duration_s"]))
            else:
                clip = self.mark1.decode(video)
                found = (self.mark1.features(clip), clip.duration_s)
            self._features = {video: found}
        return self._features[video]

    def _cache_key(self, video: str) -> str | None:
        if self.cache is None:
            return None
        record = QARecord(id="-", video=video, question="-", choices=[])
        if match_videos([record], self.cache.keys()):  # not cached, or ambiguous: the file itself decides
            log.info("%s: not in cache %s, decoding and encoding it", video, self.cache.path)
        return record.key
