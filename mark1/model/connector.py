"""VideoQAModel: the frozen LLM + the trainable projector, joined by splicing soft tokens into the prompt."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mark1.backbones import load_llm, load_tokenizer
from mark1.config import Config
from mark1.data import IGNORE, Batch
from mark1.errors import ConfigError
from mark1.model.projector import Projector, ProjectorOutput
from mark1.prompt import VIDEO_TOKEN, answer_text, build_prompt, question_text


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


def parse_device_map(spec: str) -> dict[str, torch.device]:
    """`projector=cuda:0,llm=cuda:1`; `auto`: two GPUs → split, one → both on it, none → CPU."""
    if spec == "auto":
        count = torch.cuda.device_count()
        llm = "cuda:1" if count > 1 else "cuda:0" if count else "cpu"
        return {"projector": torch.device("cuda:0" if count else "cpu"), "llm": torch.device(llm)}
    placement = {}
    for part in spec.split(","):
        name, sep, device = part.partition("=")
        if not sep or name.strip() not in ("projector", "llm", "encoder"):
            raise ConfigError(f"device map {spec!r}: expected items like projector=cuda:0,llm=cuda:1")
        placement[name.strip()] = torch.device(device.strip())
    missing = {"projector", "llm"} - set(placement)
    if missing:
        raise ConfigError(f"device map {spec!r} does not place {', '.join(sorted(missing))}")
    for device in placement.values():
        if device.type == "cuda" and (
            not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
        ):
            raise ConfigError(f"device map {spec!r} names {device}, which this machine does not have")
    return placement


class VideoQAModel(torch.nn.Module):
    """Frozen LLM (eval, no weight gradients) + trainable projector; gradients flow through the LLM to soft tokens."""

    def __init__(
        self,
        llm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        projector: Projector,
        projector_device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.llm = llm.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.projector = projector.to(projector_device or next(llm.parameters()).device)
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
        if self.video_token_id is None or self.video_token_id == tokenizer.unk_token_id:
            raise ConfigError(f"the LLM's tokenizer has no {VIDEO_TOKEN} token for the video placeholder")
        if projector.llm_dim != llm.config.hidden_size:
            raise ConfigError(
                f"projector was built for an LLM of width {projector.llm_dim}, "
                f"{llm.config.name_or_path} has {llm.config.hidden_size}"
            )

    @classmethod
    def load(
        cls, cfg: Config, video_dim: int, projector: Projector | None = None, device_map: str | None = None
    ) -> VideoQAModel:
        """Load the LLM named in `cfg` and a fresh (or given) projector, placed by `device_map`
        (default `cfg.train.device_map`)."""
        placement = parse_device_map(device_map or cfg.train.device_map)
        llm = load_llm(cfg.llm, device=placement["llm"])
        tokenizer = load_tokenizer(cfg.llm)
        if projector is None:
            projector = Projector(cfg.projector, video_dim, llm.config.hidden_size)
        return cls(llm, tokenizer, projector, placement["projector"])

    @property
    def llm_device(self) -> torch.device:
        return next(self.llm.parameters()).device

    @property
    def projector_device(self) -> torch.device:
        return next(self.projector.parameters()).device

    @property
    def num_video_tokens(self) -> int:
        return self.projector.cfg.num_visual_queries

    def distribute(self) -> None:
        """Train the projector with DistributedDataParallel (the process group must be up); the LLM stays local."""
        device = self.projector_device
        ids = [device.index] if device.type == "cuda" else None
        self.__dict__["_ddp"] = torch.nn.parallel.DistributedDataParallel(self.projector, device_ids=ids)

    def train(self, mode: bool = True) -> VideoQAModel:
        self.projector.train(mode)  # the LLM stays in eval mode: it is frozen, dropout off
        return self

    def _autocast(self):
        # T4 has no bf16: fp16 autocast on CUDA (with a GradScaler in training), plain fp32 on CPU.
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.llm_device.type == "cuda")

    def project(
        self, features: torch.Tensor, question_ids: torch.Tensor, question_mask: torch.Tensor
    ) -> ProjectorOutput:
        """Run the projector on (B, T', H', W', D) features and the question's frozen LLM embeddings."""
        with torch.no_grad():
            words = self.llm.get_input_embeddings()(question_ids.to(self.llm_device))
        dev = self.projector_device
        # Under torchrun the forward goes through the DistributedDataParallel wrapper, so gradients are
        # averaged over ranks; it is kept out of the module tree so state dicts stay the projector's own.
        return self.__dict__.get("_ddp", self.projector)(
            features.to(dev, torch.float32), words.to(dev, torch.float32), question_mask.to(dev)
        )

    def embed_prompt(self, input_ids: torch.Tensor, soft_tokens: torch.Tensor) -> torch.Tensor:
        """LLaVA-style splice: the soft tokens replace the embeddings of the VIDEO_TOKEN placeholders."""
        placeholders = input_ids == self.video_token_id  # checked where the ids are (the CPU): no GPU sync
        per_row = placeholders.sum(dim=1)
        if not torch.all(per_row == soft_tokens.shape[1]):
            raise ValueError(
                f"prompt has {per_row.tolist()} video placeholders, projector gives "
                f"{soft_tokens.shape[1]} soft tokens per row"
            )
        with torch.no_grad():
            embeds = self.llm.get_input_embeddings()(input_ids.to(self.llm_device, non_blocking=True))
        soft = soft_tokens.to(self.llm_device, embeds.dtype)
        return embeds.masked_scatter(placeholders.to(self.llm_device).unsqueeze(-1), soft)

    def loss(self, batch: Batch, lambda_temp: float, pos_weight: float) -> LossOutput:
        """Cross-entropy on the answer tokens only + lambda_temp * BCE(pos_weight) on the saliency targets.

        Which positions are answer tokens and which rows have support frames is read from the batch on the
        CPU, so the step never waits on the GPU to find them (no boolean indexing of device tensors).
        """
        out = self.project(batch.features, batch.question_ids, batch.question_mask)
        embeds = self.embed_prompt(batch.input_ids, out.soft_tokens)
        llm, dev = self.llm_device, self.projector_device
        targets = batch.labels[:, 1:]  # hidden state i predicts token i + 1
        rows, cols = (targets != IGNORE).nonzero(as_tuple=True)
        with self._autocast():
            hidden = self.llm.get_decoder()(
                inputs_embeds=embeds, attention_mask=batch.attention_mask.to(llm, non_blocking=True)
            ).last_hidden_state
            # Logits only where the loss needs them: the answer positions, not the whole vocabulary x sequence.
            picked = hidden[rows.to(llm, non_blocking=True), cols.to(llm, non_blocking=True)]
            logits = self.llm.get_output_embeddings()(picked).float()
        answer = F.cross_entropy(logits, targets[rows, cols].to(llm, non_blocking=True)).to(dev)
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

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    @torch.no_grad()
    def answer(
        self, features: torch.Tensor, question: str, choices: list[str], reuse_prompt: bool = True
    ) -> Answer:
        """Rank the choices by the LLM's log-likelihood of each choice's text after the shared prompt.

        features: (T', H', W', D). With `reuse_prompt` the prompt runs once and its KV cache serves every
        choice (batched); without, the prompt is re-run per choice (the benchmark's baseline).
        """
        out = self._project_one(features, question, choices)
        prompt_ids = torch.tensor(
            [self.encode_text(build_prompt(self.tokenizer, question, choices, self.num_video_tokens))]
        )
        prompt = self.embed_prompt(prompt_ids, out.soft_tokens)  # (1, P, D)
        logprobs = self.choice_logprobs(
            prompt, [self.encode_text(answer_text(self.tokenizer, c)) for c in choices], reuse_prompt
        )
        probs = torch.softmax(logprobs, dim=0)
        return Answer(int(probs.argmax()), probs.tolist(), torch.sigmoid(out.saliency_logits[0]).tolist())

    def _project_one(self, features: torch.Tensor, question: str, choices: list[str]) -> ProjectorOutput:
        ids = torch.tensor([self.encode_text(question_text(question, choices))])
        return self.project(features[None], ids, torch.ones_like(ids, dtype=torch.bool))

    def choice_logprobs(
        self, prompt: torch.Tensor, choices: list[list[int]], reuse_prompt: bool = True
    ) -> torch.Tensor:
        """Summed log-probability of each token sequence in `choices` after `prompt` (1, P, D) → (n,)."""
        n, longest = len(choices), max(len(c) for c in choices)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor(
            [c + [pad] * (longest - len(c)) for c in choices], device=self.llm_device
        )  # (n, Lc)
        valid = torch.tensor(
            [[1] * len(c) + [0] * (longest - len(c)) for c in choices], device=self.llm_device
        )
        decoder = self.llm.get_decoder()
        with self._autocast():
            if reuse_prompt:
                first = decoder(inputs_embeds=prompt, use_cache=True)
                cache = first.past_key_values
                cache.batch_repeat_interleave(n)
                with (
                    warnings.catch_warnings()
                ):  # newer transformers call it `cache`; the old name works everywhere
                    warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
                    # Right padding: a choice's real tokens never attend to the pads after them (causal).
                    rest = decoder(input_ids=ids, past_key_values=cache).last_hidden_state  # (n, Lc, D)
                hidden = torch.cat([first.last_hidden_state[:, -1:].expand(n, -1, -1), rest[:, :-1]], dim=1)
            else:
                embeds = torch.cat([prompt.expand(n, -1, -1), self.llm.get_input_embeddings()(ids)], dim=1)
                hidden = decoder(inputs_embeds=embeds).last_hidden_state[:, prompt.shape[1] - 1 : -1]
            logits = self.llm.get_output_embeddings()(hidden).float()  # (n, Lc, V)
        token_logprobs = logits.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        return (token_logprobs * valid).sum(dim=1)

    @torch.no_grad()
    def generate(
        self, features: torch.Tensor, question: str, max_new_tokens: int = 64
    ) -> tuple[str, list[float]]:
        """Free-text answer (no choices) with the KV cache; also returns the saliency."""
        out = self._project_one(features, question, [])
        prompt_ids = torch.tensor(
            [self.encode_text(build_prompt(self.tokenizer, question, [], self.num_video_tokens))]
        )
        embeds = self.embed_prompt(prompt_ids, out.soft_tokens)
        with self._autocast():
            tokens = self.llm.generate(
                inputs_embeds=embeds,
                attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=self.llm_device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        text = self.tokenizer.decode(tokens[0], skip_special_tokens=True)
        return text.strip(), torch.sigmoid(out.saliency_logits[0]).tolist()
