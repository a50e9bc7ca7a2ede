"""The frozen LLM (any Hugging Face causal LM): its tokenizer, the LLaVA-style splice of soft tokens into a
prompt, choice scoring with the prompt's KV cache, and KV-cached generation. Never trained: eval mode, no
weight gradients; fp16, int8 or nf4 weights, on one device or spread over several."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from mark1.backbones import load_llm, load_tokenizer
from mark1.config import LLMConfig
from mark1.prompt import VIDEO_TOKEN, encode_text, prepare_tokenizer


class FrozenLLM:
    """A causal LM + its tokenizer; gradients flow through it to the soft tokens, never into its weights."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, gradient_checkpointing: bool = False
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.video_token_id = self.tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
        self.checkpointed: list[torch.nn.Module] = []  # decoder layers recomputed in backward
        if gradient_checkpointing:
            with warnings.catch_warnings():  # renamed activation_checkpointing_enable in newer transformers
                warnings.simplefilter("ignore", FutureWarning)
                self.model.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
            self.checkpointed = [
                m for m in self.model.modules() if getattr(m, "gradient_checkpointing", False)
            ]

    @classmethod
    def load(cls, cfg: LLMConfig, devices: tuple[torch.device, ...], allow_pickle: bool = False) -> FrozenLLM:
        if cfg.quantization == "int8":  # on the CPU (fp32 inputs) bitsandbytes says so on every matmul
            logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
        model = load_llm(cfg.name, devices, cfg.quantization, allow_pickle, cfg.max_memory_gb)
        return cls(model, load_tokenizer(cfg.name), cfg.gradient_checkpointing)

    @contextmanager
    def _recompute_in_backward(self) -> Iterator[None]:
        """Gradient checkpointing for one forward that needs gradients.

        Transformers checkpoints a layer only while it is in training mode; only the layers' own flag is
        set, not their children's, so dropout stays off and the LLM computes as in eval mode. Outside this
        (answering, no gradients) the layers keep their KV cache.
        """
        on = bool(self.checkpointed) and torch.is_grad_enabled()
        for layer in self.checkpointed if on else ():
            layer.training = True
        try:
            yield
        finally:
            for layer in self.checkpointed if on else ():
                layer.training = False

    @property
    def device(self) -> torch.device:
        """Where the prompt goes in: the device of the embedding table (the first layers)."""
        return self.model.get_input_embeddings().weight.device

    @functools.cached_property
    def fingerprint(self) -> str:
        """A short hash of what the soft tokens were trained into, the same whatever precision the LLM was
        loaded in: the architecture, the tokenizer (size, end token, chat template), and a strided sample
        of every weight bitsandbytes never quantizes (embeddings, output head, norms, biases). The decoder's
        linear weights are left out, since int8/nf4 store them differently: a fine-tune that changes only
        those (a merged LoRA) is not told apart."""
        digest = hashlib.sha256()
        shape = [
            getattr(self.config, key, None) for key in ("model_type", "hidden_size", "num_hidden_layers")
        ]
        tokenizer = [len(self.tokenizer), self.tokenizer.eos_token_id, self.tokenizer.chat_template or ""]
        digest.update(json.dumps([shape, tokenizer]).encode())
        head = self.model.get_output_embeddings()
        for name, module in self.model.named_modules():
            for key, weight in module.named_parameters(recurse=False):
                if key == "weight" and isinstance(module, torch.nn.Linear) and module is not head:
                    continue
                flat = weight.detach().flatten()
                # Rounded to fp16 first, so an fp32 load and an fp16 load give the same bytes.
                sample = flat[:: max(1, flat.numel() // 64)][:64].to("cpu", torch.float16)
                digest.update(f"{name}.{key}".encode() + sample.numpy().tobytes())
        return digest.hexdigest()[:16]

    @property
    def config(self) -> PretrainedConfig:
        """The language model's config (a multimodal checkpoint such as Gemma 3 4B nests it)."""
        return self.model.config.get_text_config()

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    def autocast(self) -> AbstractContextManager:
        # T4 has no bf16: fp16 autocast on CUDA (with a GradScaler in training), plain fp32 on CPU.
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda")

    def encode_text(self, text: str) -> list[int]:
        return encode_text(self.tokenizer, text)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """The frozen embedding table's rows for `ids` (no gradient), on the LLM's device."""
        with torch.no_grad():
            return self.model.get_input_embeddings()(ids.to(self.device, non_blocking=True))

    def embed_prompt(self, input_ids: torch.Tensor, soft_tokens: torch.Tensor) -> torch.Tensor:
        """LLaVA-style splice: the soft tokens replace the embeddings of the VIDEO_TOKEN placeholders (whose
        own id is never looked up: it may be one the tokenizer added, past the embedding table)."""
        placeholders = input_ids == self.video_token_id  # checked where the ids are (the CPU): no GPU sync
        per_row = placeholders.sum(dim=1)
        if not torch.all(per_row == soft_tokens.shape[1]):
            raise ValueError(
                f"prompt has {per_row.tolist()} video placeholders, projector gives "
                f"{soft_tokens.shape[1]} soft tokens per row"
            )
        embeds = self.embed_tokens(input_ids.masked_fill(placeholders, self.pad_id))
        soft = soft_tokens.to(self.device, embeds.dtype)
        return embeds.masked_scatter(placeholders.to(self.device).unsqueeze(-1), soft)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 next-token logits of final hidden states, as the model's own head gives them (with Gemma 2's
        soft cap)."""
        logits = self.model.get_output_embeddings()(hidden).float()
        cap = getattr(self.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def answer_logits(
        self, embeds: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        """Logits (N, V) of the next token at positions (rows, cols) only: the loss needs the answer
        positions, not the whole vocabulary x sequence."""
        dev = self.device
        with self.autocast(), self._recompute_in_backward():
            hidden = self.model.get_decoder()(
                inputs_embeds=embeds,
                attention_mask=attention_mask.to(dev, non_blocking=True),
                use_cache=False,
            ).last_hidden_state
            picked = hidden[
                rows.to(hidden.device, non_blocking=True), cols.to(hidden.device, non_blocking=True)
            ]
            return self.logits(picked).to(dev)

    def choice_logprobs(
        self, prompt: torch.Tensor, choices: list[list[int]], reuse_prompt: bool = True
    ) -> torch.Tensor:
        """Summed log-probability of each token sequence in `choices` after `prompt` (1, P, D) → (n,).

        With `reuse_prompt` the prompt runs once and its KV cache serves every choice (batched); without,
        the prompt is re-run per choice (the benchmark's baseline).
        """
        n, longest = len(choices), max(len(c) for c in choices)
        ids = torch.tensor([c + [self.pad_id] * (longest - len(c)) for c in choices], device=self.device)
        valid = torch.tensor([[1] * len(c) + [0] * (longest - len(c)) for c in choices], device=self.device)
        decoder = self.model.get_decoder()
        with self.autocast():
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
                embeds = torch.cat([prompt.expand(n, -1, -1), self.model.get_input_embeddings()(ids)], dim=1)
                hidden = decoder(inputs_embeds=embeds).last_hidden_state[:, prompt.shape[1] - 1 : -1]
            logits = self.logits(hidden).to(self.device)  # (n, Lc, V)
        token_logprobs = logits.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        return (token_logprobs * valid).sum(dim=1)

    def generate(self, prompt: torch.Tensor, max_new_tokens: int) -> str:
        """Greedy free text after `prompt` (1, P, D), with the KV cache."""
        with self.autocast():
            tokens = self.model.generate(
                inputs_embeds=prompt,
                attention_mask=torch.ones(prompt.shape[:2], dtype=torch.long, device=self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(tokens[0], skip_special_tokens=True).strip()
