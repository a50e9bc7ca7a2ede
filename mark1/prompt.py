"""The one prompt format of Mark-1, used by train, eval, predict and infer alike, for any causal LM's tokenizer.

A prompt is the tokenizer's chat template around one user turn (or, for a tokenizer without one, the plain
template below), whose content is the video placeholders and then the question with its lettered choices.
The template's markup and the placeholders are encoded with special tokens on; the question and choices
with them off, so a question holding "<|im_end|>" or "<|video_pad|>" is text, never a turn end or a slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2
from tokenizers import AddedToken
from transformers import PreTrainedTokenizerBase

from mark1.config import PromptConfig
from mark1.errors import AnnotationError, ConfigError

PROMPT_FORMAT = "mark1-chat-v1"  # stored in checkpoints; bump when the text below changes
VIDEO_TOKEN, VISION_START, VISION_END = "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # choice labels, by position
INSTRUCTION = "Answer with the letter and the text of the correct choice."
# For tokenizers without a chat template (Llama-2 / Vicuna style): Vicuna's turn markers, BOS first.
PLAIN_USER, PLAIN_ASSISTANT = "USER: ", "\nASSISTANT: "
_TEXT_SLOT = "<<mark1-question>>"  # where the question goes in the rendered template; never encoded


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """The tokenizer with a video placeholder token: its own <|video_pad|> (Qwen), else one added here.

    An added placeholder may have an id past the LLM's embedding table: that is fine, because the splice
    replaces every placeholder's embedding before the LLM sees it and never looks the id up, so no frozen
    embedding is trained or changed. Adding is deterministic: every load gets the same id.
    """
    special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    if VIDEO_TOKEN not in special:  # absent, or a plain token that a question's text could produce
        tokenizer.add_tokens([AddedToken(VIDEO_TOKEN, special=True, normalized=False)], special_tokens=True)
    return tokenizer


def resolve_template(tokenizer: PreTrainedTokenizerBase, template: str) -> str:
    """`auto` → `chat` where the tokenizer has a chat template, else `plain`."""
    if template == "auto":
        return "chat" if tokenizer.chat_template else "plain"
    if template == "chat" and not tokenizer.chat_template:
        raise ConfigError(
            "prompt.template is chat but the LLM's tokenizer has no chat template: a checkpoint answers only "
            "through the LLM it was trained with (--llm); for training, set prompt.template=plain or auto"
        )
    return template


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of user text as it sits inside a prompt: no BOS/EOS added, special-token strings kept as text."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids


def _encode_markup(tokenizer: PreTrainedTokenizerBase, markup: str) -> list[int]:
    return tokenizer(markup, add_special_tokens=False).input_ids


@dataclass
class FittedText:
    """A question and its choices cut to the prompt's token caps."""

    question: str
    choices: list[str]
    truncated: bool  # something was cut
    answer: str | None = None  # an open question's free-text answer (training only)


def fit_text(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    choices: list[str],
    budget: PromptConfig,
    answer: str | None = None,
) -> FittedText:
    """Cut the question to `max_question_tokens`, each choice to `max_choice_tokens` and a free-text answer
    to `max_answer_tokens`: training and answering call this one function, so both see the same text."""

    def encode(text: str) -> list[int]:
        return encode_text(tokenizer, text)

    def cut(text: str, limit: int) -> tuple[str, bool]:
        ids = encode(text)
        if len(ids) <= limit:
            return text, False
        # Back off token by token until the cut is whole characters that re-encode within the cap: a cut
        # inside a multi-byte character decodes to U+FFFD, which would take more tokens than it replaced.
        for keep in range(limit, -1, -1):
            short = tokenizer.decode(ids[:keep])
            if not short.endswith("\ufffd") and len(encode(short)) <= limit:
                return short, True
        return "", True

    question, cut_question = cut(question, budget.max_question_tokens)
    fitted = [cut(c, budget.max_choice_tokens) for c in choices]
    answer, cut_answer = cut(answer, budget.max_answer_tokens) if answer is not None else (None, False)
    truncated = cut_question or cut_answer or any(was_cut for _, was_cut in fitted)
    return FittedText(question, [c for c, _ in fitted], truncated, answer)


def question_text(question: str, choices: list[str]) -> str:
    """What the projector's fusion layers read: the question and its choices, no template."""
    return "\n".join([question, *choices])


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    question: str,
    choices: list[str],
    num_video_tokens: int,
) -> list[int]:
    """The prompt's token ids up to where the answer starts, in `template` (`chat` or `plain`)."""
    vocab = tokenizer.get_vocab()
    # Qwen's vision markers around the placeholders, where the tokenizer has them.
    framed = VISION_START in vocab and VISION_END in vocab
    video = VIDEO_TOKEN * num_video_tokens
    user = (VISION_START + video + VISION_END if framed else video) + _TEXT_SLOT
    if resolve_template(tokenizer, template) == "chat":
        rendered = _render_chat(tokenizer, user)
    else:
        rendered = (tokenizer.bos_token or "") + PLAIN_USER + user + PLAIN_ASSISTANT
    before, _, after = rendered.partition(_TEXT_SLOT)
    if rendered.count(_TEXT_SLOT) != 1 or (before + after).count(VIDEO_TOKEN) != num_video_tokens:
        raise ConfigError(
            "the LLM's chat template does not place the user's text once (it drops or repeats it); "
            "use a tokenizer with a standard template, or train with prompt.template=plain"
        )
    body = "\n".join([question, *choices, *([INSTRUCTION] if choices else [])])
    return (
        _encode_markup(tokenizer, before)
        + encode_text(tokenizer, "\n" + body)
        + _encode_markup(tokenizer, after)
    )


def _render_chat(tokenizer: PreTrainedTokenizerBase, user: str) -> str:
    """One user turn through the tokenizer's own chat template (a Jinja text that came with the model)."""
    try:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=False,  # Qwen3: no thinking block; other templates ignore it
            date_string="26 Jul 2024",  # Llama 3.x's system line: a fixed date, not today's, so prompts never drift
        )
    except jinja2.TemplateError as err:  # a damaged template, or one that raises on a lone user turn
        raise ConfigError(
            f"the LLM's chat template fails ({str(err).splitlines()[0][:200]}); fix its chat_template, or train "
            "with prompt.template=plain"
        ) from err


def answer_ids(tokenizer: PreTrainedTokenizerBase, choice: str) -> list[int]:
    """The training target and scoring tokens of a choice ("B. Sai"), closed by the end-of-turn token."""
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    return encode_text(tokenizer, choice) + eos


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    text: FittedText,
    num_video_tokens: int,
    budget: PromptConfig,
    where: str,
    answered: bool = True,
) -> list[int]:
    """The prompt's token ids; a prompt that leaves no room for its longest answer (an open question's:
    `max_answer_tokens`; none for a grounding query, which is never `answered`) within `max_prompt_tokens`
    is refused, naming `where` (the row, or the question)."""
    ids = prompt_ids(tokenizer, budget.template, text.question, text.choices, num_video_tokens)
    longest = (
        max((len(answer_ids(tokenizer, c)) for c in text.choices), default=budget.max_answer_tokens + 1)
        if answered
        else 0
    )
    if len(ids) + longest > budget.max_prompt_tokens:
        raise AnnotationError(
            f"{where}: the prompt and its answer take {len(ids) + longest} tokens, past "
            f"prompt.max_prompt_tokens={budget.max_prompt_tokens}; shorten it, or raise the cap with --set"
        )
    return ids
