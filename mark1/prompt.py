"""The one prompt format of Mark-1, used by train, eval, predict and infer alike."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from mark1.config import PromptConfig
from mark1.errors import AnnotationError

PROMPT_FORMAT = "mark1-chat-v1"  # stored in checkpoints; bump when the text below changes
VIDEO_TOKEN, VISION_START, VISION_END = "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # choice labels, by position
INSTRUCTION = "Answer with the letter and the text of the correct choice."


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of `text` as it sits inside a prompt (no BOS/EOS added)."""
    return tokenizer(text, add_special_tokens=False).input_ids


@dataclass
class FittedText:
    """A question and its choices cut to the prompt's token caps."""

    question: str
    choices: list[str]
    truncated: bool  # something was cut


def fit_text(
    tokenizer: PreTrainedTokenizerBase, question: str, choices: list[str], budget: PromptConfig
) -> FittedText:
    """Cut the question to `max_question_tokens` and each choice to `max_choice_tokens`: training and
    answering call this one function, so both see the same text."""

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
    truncated = cut_question or any(was_cut for _, was_cut in fitted)
    return FittedText(question, [c for c, _ in fitted], truncated)


def user_text(question: str, choices: list[str], num_video_tokens: int) -> str:
    """The user turn: video placeholders (replaced by soft tokens), the question, the lettered choices."""
    video = VISION_START + VIDEO_TOKEN * num_video_tokens + VISION_END
    lines = [video, question, *choices]
    if choices:
        lines.append(INSTRUCTION)
    return "\n".join(lines)


def question_text(question: str, choices: list[str]) -> str:
    """What the projector's fusion layers read: the question and its choices, no template."""
    return "\n".join([question, *choices])


def build_prompt(
    tokenizer: PreTrainedTokenizerBase, question: str, choices: list[str], num_video_tokens: int
) -> str:
    """The full prompt up to where the answer starts: the chat template (thinking off) or a plain one."""
    user = user_text(question, choices, num_video_tokens)
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=False,
        )
    return f"{user}\nAnswer: "


def answer_text(tokenizer: PreTrainedTokenizerBase, choice: str) -> str:
    """The training target and scoring text of a choice ("B. Sai"), closed by the end-of-turn token."""
    return choice + (tokenizer.eos_token or "")


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    text: FittedText,
    num_video_tokens: int,
    budget: PromptConfig,
    where: str,
) -> list[int]:
    """The prompt's token ids; a prompt that leaves no room for its longest answer within
    `max_prompt_tokens` is refused, naming `where` (the row, or the question)."""
    ids = encode_text(tokenizer, build_prompt(tokenizer, text.question, text.choices, num_video_tokens))
    longest = max((len(encode_text(tokenizer, answer_text(tokenizer, c))) for c in text.choices), default=0)
    if len(ids) + longest > budget.max_prompt_tokens:
        raise AnnotationError(
            f"{where}: the prompt and its answer take {len(ids) + longest} tokens, past "
            f"prompt.max_prompt_tokens={budget.max_prompt_tokens}; shorten it, or raise the cap with --set"
        )
    return ids
