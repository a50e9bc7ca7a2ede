"""The one prompt format of Mark-1, used by train, eval, predict and infer alike."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

PROMPT_FORMAT = "mark1-chat-v1"  # stored in checkpoints; bump when the text below changes
VIDEO_TOKEN, VISION_START, VISION_END = "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # choice labels, by position
INSTRUCTION = "Answer with the letter and the text of the correct choice."


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
