"""VideoQAModel: the trainable projector + the frozen LLM, joined by splicing soft tokens into the prompt."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from mark1.config import Config, PromptConfig
from mark1.data import IGNORE, Batch
from mark1.devices import Placement
from mark1.errors import ConfigError
from mark1.model.llm import FrozenLLM
from mark1.model.projector import Projector, ProjectorOutput
from mark1.model.spans import SpanWeights, span_loss, windows_in_seconds
from mark1.prompt import answer_ids, encode_prompt, fit_text, question_text, resolve_template


@dataclass
class LossOutput:
    total: torch.Tensor
    answer: torch.Tensor
    saliency: torch.Tensor
    span: torch.Tensor


@dataclass
class Answer:
    """The answer to one question: a ranked choice, generated text, or (a grounding query) only where."""

    index: int | None  # the chosen choice
    probs: list[float]  # one per choice, from the LLM's log-likelihood of each choice's text
    saliency: list[float]  # sigmoid of each temporal position's logit
    truncated: bool = False  # the question or a choice was cut to the prompt's token caps
    text: str = ""  # the chosen choice ("B. Sai") or the generated answer
    windows: list[tuple[float, float, float]] = field(default_factory=list)  # span head: (start, end, conf)
    # One per choice: the LLM's summed log-likelihood of the choice's tokens after the prompt (`probs` is
    # their softmax); lmms-eval's loglikelihood requests return these.
    logprobs: list[float] = field(default_factory=list)


class VideoQAModel(torch.nn.Module):
    """Trainable projector + frozen LLM; the projector's gradients come back through the LLM."""

    def __init__(
        self,
        llm: FrozenLLM,
        projector: Projector,
        projector_device: torch.device | None = None,
        budget: PromptConfig | None = None,
    ) -> None:
        super().__init__()
        if projector.llm_dim != llm.hidden_size:
            raise ConfigError(
                f"projector was built for an LLM of width {projector.llm_dim}, "
                f"{llm.model.config.name_or_path} has {llm.hidden_size}"
            )
        self.llm = llm
        self.projector = projector.to(projector_device or llm.device)
        # The checkpoint's caps and template: answering builds the prompt as training did. `auto` is resolved
        # here, so a checkpoint records the template it was trained with.
        budget = budget or PromptConfig()
        self.budget = dataclasses.replace(budget, template=resolve_template(llm.tokenizer, budget.template))
        context = getattr(llm.config, "max_position_embeddings", None)
        if context is not None and self.budget.max_prompt_tokens > context:
            raise ConfigError(
                f"prompt.max_prompt_tokens={self.budget.max_prompt_tokens} is past the LLM's context of "
                f"{context} tokens; set it to at most {context}"
            )

    @classmethod
    def load(
        cls,
        cfg: Config,
        placement: Placement,
        projector: Projector | None = None,
        video_dim: int = 0,
    ) -> VideoQAModel:
        """The LLM `cfg` names, placed as `placement.llm` says + the given projector, or a fresh one for
        `video_dim`."""
        llm = FrozenLLM.load(cfg.llm, placement.llm, cfg.allow_pickle_weights)
        projector = projector or Projector(cfg.projector, video_dim, llm.hidden_size)
        return cls(llm, projector, placement.projector, cfg.prompt)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.llm.tokenizer

    @property
    def projector_device(self) -> torch.device:
        return next(self.projector.parameters()).device

    @property
    def num_video_tokens(self) -> int:
        return self.projector.cfg.num_visual_queries

    def distribute(self) -> None:
        """Train the projector with DistributedDataParallel (the process group must be up)."""
        device = self.projector_device
        ids = [device.index] if device.type == "cuda" else None
        # Kept out of the module tree, so state dicts stay the projector's own.
        self.__dict__["_ddp"] = torch.nn.parallel.DistributedDataParallel(self.projector, device_ids=ids)

    def train(self, mode: bool = True) -> VideoQAModel:
        self.projector.train(mode)  # the LLM stays in eval mode: it is frozen, dropout off
        return self

    def project(
        self, features: torch.Tensor, question_ids: torch.Tensor, question_mask: torch.Tensor
    ) -> ProjectorOutput:
        """Run the projector on (B, T', H', W', D) features and the question's frozen LLM embeddings."""
        words = self.llm.embed_tokens(question_ids)
        dev = self.projector_device
        # Under torchrun the forward goes through DistributedDataParallel, so gradients are averaged over ranks.
        return self.__dict__.get("_ddp", self.projector)(
            features.to(dev, torch.float32), words.to(dev, torch.float32), question_mask.to(dev)
        )

    def loss(
        self, batch: Batch, lambda_temp: float, pos_weight: float, spans: SpanWeights | None = None
    ) -> LossOutput:
        """Cross-entropy on the answer tokens only + lambda_temp * BCE(pos_weight) on the saliency targets
        + the span head's loss where rows have spans. Rows without an answer (grounding queries) skip the
        LLM.

        Which positions are answer tokens and which rows have support frames or spans is read from the batch
        on the CPU, so the step never waits on the GPU to find them (no boolean indexing of device tensors);
        the span head's matching waits once, for its cost matrices. The answer's cross-entropy averages over
        answer tokens, so a long free answer weighs more than a short choice ("B. Sai"), as in any LM loss.
        A loss with no rows to learn from is zero through its head, so every projector parameter gets a
        gradient, as DistributedDataParallel expects.
        """
        out = self.project(batch.features, batch.question_ids, batch.question_mask)
        dev = self.projector_device
        targets = batch.labels[:, 1:]  # hidden state i predicts token i + 1
        answered = (targets != IGNORE).any(dim=1).nonzero().squeeze(1)
        if len(answered):
            embeds = self.llm.embed_prompt(batch.input_ids[answered], out.soft_tokens[answered.to(dev)])
            rows, cols = (targets[answered] != IGNORE).nonzero(as_tuple=True)
            logits = self.llm.answer_logits(embeds, batch.attention_mask[answered], rows, cols)
            picked = targets[answered][rows, cols].to(logits.device, non_blocking=True)
            answer = F.cross_entropy(logits, picked).to(dev)
        else:
            answer = out.soft_tokens.sum() * 0.0
        supported = batch.has_support.nonzero().squeeze(1)
        if len(supported):
            saliency = F.binary_cross_entropy_with_logits(
                out.saliency_logits[supported.to(dev, non_blocking=True)].float(),
                batch.saliency_target[supported].to(dev, non_blocking=True),
                pos_weight=torch.full((), pos_weight, device=dev),
            )
        else:
            saliency = out.saliency_logits.sum() * 0.0
        span = torch.zeros((), device=dev)
        if out.windows is not None:
            weights = spans or SpanWeights()
            span = span_loss(out.windows, out.window_logits, batch.span_target, batch.num_spans, weights)
        total = answer + lambda_temp * saliency + span
        return LossOutput(total, answer.detach(), saliency.detach(), span.detach())

    @torch.no_grad()
    def answer(
        self,
        features: torch.Tensor,
        question: str,
        choices: list[str],
        *,
        duration_s: float,
        generate: bool = True,
        max_new_tokens: int = 64,
        reuse_prompt: bool = True,
        where: str = "the question",
    ) -> Answer:
        """Answer one question about (T', H', W', D) features of a clip of `duration_s` seconds.

        With choices: rank them by the LLM's log-likelihood of each choice's text after the shared prompt
        (`reuse_prompt=False` re-runs the prompt per choice, the bench's baseline). Without: greedy KV-cached
        generation of at most `max_new_tokens`, or, with `generate=False` (a grounding query), the LLM is
        not run. Always the saliency and the span head's windows in seconds. `where` names the question in
        an error ("row 3 (id q3)").
        """
        text = fit_text(self.tokenizer, question, choices, self.budget)
        ids = torch.tensor([self.llm.encode_text(question_text(text.question, text.choices))])
        out = self.project(features[None], ids, torch.ones_like(ids, dtype=torch.bool))
        saliency = torch.sigmoid(out.saliency_logits[0]).tolist()
        windows = (
            []
            if out.windows is None
            else windows_in_seconds(out.windows[0], out.window_logits[0], duration_s)
        )
        result = Answer(None, [], saliency, text.truncated, windows=windows)
        if not (choices or generate):
            return result
        prompt_ids = encode_prompt(self.tokenizer, text, self.num_video_tokens, self.budget, where)
        prompt = self.llm.embed_prompt(torch.tensor([prompt_ids]), out.soft_tokens)
        if not choices:
            result.text = self.llm.generate(prompt, max_new_tokens)
            return result
        answers = [answer_ids(self.tokenizer, c) for c in text.choices]
        logprobs = self.llm.choice_logprobs(prompt, answers, reuse_prompt)
        probs = torch.softmax(logprobs, dim=0)
        result.index, result.probs, result.logprobs = int(probs.argmax()), probs.tolist(), logprobs.tolist()
        result.text = choices[result.index]
        return result
