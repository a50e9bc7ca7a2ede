"""VideoQAModel: the trainable projector + the frozen LLM, joined by splicing soft tokens into the prompt."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from mark1.config import Config, PromptConfig
from mark1.data import IGNORE, Batch
from mark1.devices import Placement
from mark1.errors import ConfigError
from mark1.model.llm import FrozenLLM
from mark1.model.projector import Projector, ProjectorOutput
from mark1.prompt import FittedText, answer_ids, encode_prompt, fit_text, question_text, resolve_template


@dataclass
class LossOutput:
    total: torch.Tensor
    answer: torch.Tensor
    saliency: torch.Tensor


@dataclass
class Answer:
    """The answer to one multiple-choice question."""

    index: int
    probs: list[float]  # one per choice, from the LLM's log-likelihood of each choice's text
    saliency: list[float]  # sigmoid of each temporal position's logit
    truncated: bool = False  # the question or a choice was cut to the prompt's token caps


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

    def loss(self, batch: Batch, lambda_temp: float, pos_weight: float) -> LossOutput:
        """Cross-entropy on the answer tokens only + lambda_temp * BCE(pos_weight) on the saliency targets.

        Which positions are answer tokens and which rows have support frames is read from the batch on the
        CPU, so the step never waits on the GPU to find them (no boolean indexing of device tensors).
        """
        out = self.project(batch.features, batch.question_ids, batch.question_mask)
        embeds = self.llm.embed_prompt(batch.input_ids, out.soft_tokens)
        dev = self.projector_device
        targets = batch.labels[:, 1:]  # hidden state i predicts token i + 1
        rows, cols = (targets != IGNORE).nonzero(as_tuple=True)
        logits = self.llm.answer_logits(embeds, batch.attention_mask, rows, cols)
        answer = F.cross_entropy(logits, targets[rows, cols].to(logits.device, non_blocking=True)).to(dev)
        supported = batch.has_support.nonzero().squeeze(1)
        if len(supported):
            saliency = F.binary_cross_entropy_with_logits(
                out.saliency_logits[supported.to(dev, non_blocking=True)].float(),
                batch.saliency_target[supported].to(dev, non_blocking=True),
                pos_weight=torch.full((), pos_weight, device=dev),
            )
        else:  # zero, but through the head: every projector parameter gets a gradient, as DDP expects
            saliency = out.saliency_logits.sum() * 0.0
        return LossOutput(answer + lambda_temp * saliency, answer.detach(), saliency.detach())

    @torch.no_grad()
    def answer(
        self,
        features: torch.Tensor,
        question: str,
        choices: list[str],
        reuse_prompt: bool = True,
        where: str = "the question",
    ) -> Answer:
        """Rank the choices by the LLM's log-likelihood of each choice's text after the shared prompt.

        features: (T', H', W', D); `reuse_prompt=False` re-runs the prompt per choice (the bench's baseline);
        `where` names the question in an error ("row 3 (id q3)").
        """
        text = fit_text(self.tokenizer, question, choices, self.budget)
        out, prompt = self._prompt(features, text, where)
        answers = [answer_ids(self.tokenizer, c) for c in text.choices]
        probs = torch.softmax(self.llm.choice_logprobs(prompt, answers, reuse_prompt), dim=0)
        saliency = torch.sigmoid(out.saliency_logits[0]).tolist()
        return Answer(int(probs.argmax()), probs.tolist(), saliency, text.truncated)

    @torch.no_grad()
    def generate(
        self, features: torch.Tensor, question: str, max_new_tokens: int = 64
    ) -> tuple[str, list[float]]:
        """Free-text answer (no choices) with the KV cache; also returns the saliency."""
        out, prompt = self._prompt(
            features, fit_text(self.tokenizer, question, [], self.budget), "the question"
        )
        text = self.llm.generate(prompt, max_new_tokens)
        return text, torch.sigmoid(out.saliency_logits[0]).tolist()

    def _prompt(
        self, features: torch.Tensor, text: FittedText, where: str
    ) -> tuple[ProjectorOutput, torch.Tensor]:
        """The projector's output for one question and its prompt's embeddings (1, P, D), soft tokens in."""
        ids = torch.tensor([self.llm.encode_text(question_text(text.question, text.choices))])
        out = self.project(features[None], ids, torch.ones_like(ids, dtype=torch.bool))
        prompt = encode_prompt(self.tokenizer, text, self.num_video_tokens, self.budget, where)
        return out, self.llm.embed_prompt(torch.tensor([prompt]), out.soft_tokens)
