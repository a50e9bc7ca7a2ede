"""The only trained part: video patch features + question → soft tokens for the LLM and per-position saliency."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mark1.config import ProjectorConfig, saved_projector
from mark1.errors import CheckpointError, ConfigError

WEIGHTS_FILE = "projector.safetensors"


@dataclass
class ProjectorOutput:
    soft_tokens: torch.Tensor  # (B, num_visual_queries, llm_dim)
    saliency_logits: torch.Tensor  # (B, T') one logit per temporal position
    windows: torch.Tensor | None = None  # (B, Nt, 2) (centre, width) as fractions of the clip: the span head
    window_logits: torch.Tensor | None = None  # (B, Nt) each window's confidence


def _mlp(dim: int, hidden: int, out: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out))


class CrossAttentionBlock(nn.Module):
    """Queries read the video tokens: pre-norm cross-attention (SDPA) + MLP, both residual.

    The same block V-JEPA2's attentive probe uses to read frozen features.
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.kv, self.out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.mlp = _mlp(dim, mlp_dim, dim, dropout)

    def forward(
        self, queries: torch.Tensor, tokens: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """queries (B, N, D), tokens (B, M, D), optional additive attention bias (B, M) → (B, N, D)."""
        b, n, d = queries.shape
        heads = self.num_heads
        q = self.q(self.norm_q(queries)).view(b, n, heads, d // heads).transpose(1, 2)  # (B, h, N, hd)
        k, v = (
            self.kv(self.norm_kv(tokens)).view(b, -1, 2, heads, d // heads).permute(2, 0, 3, 1, 4)
        )  # (B, h, M, hd)
        mask = None if bias is None else bias[:, None, None, :].to(q.dtype)  # (B, 1, 1, M)
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        queries = queries + self.out(attn.transpose(1, 2).reshape(b, n, d))
        return queries + self.mlp(self.norm_mlp(queries))


class Projector(nn.Module):
    """Learnable queries + cross-attention + BERT-style fusion with the question + two heads.

    1. video tokens → Linear(video_dim → D) + factorised temporal / row / column position embeddings;
    2. 32 visual + 5 temporal queries cross-attend to them;
    3. transformer layers fuse [queries ; (fuse_timeline) one token per temporal position, its patches pooled ;
       question embeddings from the frozen LLM] (padding masked): what came first and how many times
       something appeared are worked out beside the question, over the positions in time order;
    4. (saliency_reread) the fused visual queries read the video again, biased towards the salient moments;
    5. the visual queries become soft tokens (LLaVA-style Linear-GELU-Linear to the LLM width); each
       temporal position's pooled features are scored against every fused temporal query (scaled dot
       product through small MLPs), max over queries: one saliency logit per position, for any T';
    6. (span_head) each fused temporal query predicts a window with a confidence: its centre is where the
       query attends over the temporal positions (their times as fractions of the clip, plus a learned
       shift of up to one position), its width and confidence come from the query. Centres anchored on
       positions learn from a few hundred clips where a free regression from the query needs far more.
    """

    def __init__(self, cfg: ProjectorConfig, video_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.cfg, self.video_dim, self.llm_dim = cfg, video_dim, llm_dim
        dim = cfg.hidden_size
        self.video_in = nn.Linear(video_dim, dim)
        self.time_pos = nn.Embedding(cfg.max_temporal_positions, dim)
        self.row_pos = nn.Embedding(cfg.max_spatial_positions, dim)
        self.col_pos = nn.Embedding(cfg.max_spatial_positions, dim)
        self.queries = nn.Parameter(
            torch.randn(cfg.num_visual_queries + cfg.num_temporal_queries, dim) * 0.02
        )
        self.cross = CrossAttentionBlock(dim, cfg.num_heads, cfg.intermediate_size, cfg.dropout)
        self.question_in = nn.Linear(llm_dim, dim)
        self.segment = nn.Embedding(2, dim)  # BERT's token types: 0 = query, 1 = question
        if cfg.fuse_timeline:
            self.timeline_segment = nn.Parameter(torch.randn(dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim,
            cfg.num_heads,
            cfg.intermediate_size,
            cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.fusion = nn.TransformerEncoder(layer, cfg.num_fusion_layers, enable_nested_tensor=False)
        self.fusion_norm = nn.LayerNorm(dim)
        self.soft_head = _mlp(dim, llm_dim, llm_dim)
        if cfg.saliency_reread:
            self.reread = CrossAttentionBlock(dim, cfg.num_heads, cfg.intermediate_size, cfg.dropout)
        if cfg.temporal_head == "scoring":
            self.position_mlp = _mlp(dim, dim, dim)
            self.query_mlp = _mlp(dim, dim, dim)
        else:  # the seed's head: each temporal query → fixed T' logits, max over queries
            self.seed_head = _mlp(dim, dim, cfg.max_temporal_positions)
        if cfg.span_head:
            self.span_keys, self.span_queries = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.span_out = _mlp(dim, dim, 3)  # centre shift, width logit, confidence logit
        for emb in (self.time_pos, self.row_pos, self.col_pos, self.segment):
            nn.init.normal_(emb.weight, std=0.02)

    def forward(
        self, video: torch.Tensor, question: torch.Tensor, question_mask: torch.Tensor
    ) -> ProjectorOutput:
        """video (B, T', H', W', video_dim); question (B, L, llm_dim) embeddings; question_mask (B, L) True = token."""
        b, t, h, w, _ = video.shape
        cfg = self.cfg
        if t > cfg.max_temporal_positions or max(h, w) > cfg.max_spatial_positions:
            raise ValueError(
                f"feature grid {t}x{h}x{w} exceeds the projector's position tables "
                f"({cfg.max_temporal_positions} x {cfg.max_spatial_positions})"
            )
        dev = video.device
        x = self.video_in(video)  # (B, T', H', W', D)
        x = (
            x
            + self.time_pos(torch.arange(t, device=dev))[:, None, None]
            + self.row_pos(torch.arange(h, device=dev))[:, None]
            + self.col_pos(torch.arange(w, device=dev))
        )
        queries = self.cross(self.queries.expand(b, -1, -1), x.flatten(1, 3))  # (B, Nv + Nt, D)
        positions = x.mean(dim=(2, 3))  # (B, T', D) each temporal position's patches pooled
        timeline = [positions + self.timeline_segment] if cfg.fuse_timeline else []
        words = self.question_in(question)  # (B, L, D)
        sequence = torch.cat(
            [queries + self.segment.weight[0], *timeline, words + self.segment.weight[1]], dim=1
        )
        seen = sequence.shape[1] - words.shape[1]  # queries and timeline: never padding
        padding = torch.cat([question_mask.new_zeros(b, seen), ~question_mask], dim=1)
        fused = self.fusion_norm(self.fusion(sequence, src_key_padding_mask=padding))
        visual = fused[:, : cfg.num_visual_queries]
        temporal = fused[:, cfg.num_visual_queries : queries.shape[1]]  # (B, Nt, D)
        saliency = self._saliency(positions, temporal)  # (B, T')
        if cfg.saliency_reread:
            # The visual queries read the video again, biased towards the moments the temporal head points
            # at (detached: saliency is taught by the support frames, the answer only uses it).
            bias = F.log_softmax(saliency.detach(), dim=-1)[:, :, None].expand(b, t, h * w).reshape(b, -1)
            visual = self.reread(visual, x.flatten(1, 3), bias)
        windows, window_logits = self._windows(positions, temporal) if cfg.span_head else (None, None)
        return ProjectorOutput(self.soft_head(visual), saliency, windows, window_logits)

    def _windows(self, positions: torch.Tensor, temporal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T', D), temporal (B, Nt, D) → windows (B, Nt, 2) as (centre, width), logits (B, Nt)."""
        t = positions.shape[1]
        attend = self.span_queries(temporal) @ self.span_keys(positions).transpose(1, 2)  # (B, Nt, T')
        weights = torch.softmax(attend / math.sqrt(positions.shape[-1]), dim=-1)
        fractions = (torch.arange(t, device=positions.device, dtype=weights.dtype) + 0.5) / t
        shift, width, confidence = self.span_out(temporal).unbind(-1)
        centre = (weights @ fractions + torch.tanh(shift) / t).clamp(0, 1)
        return torch.stack([centre, torch.sigmoid(width)], dim=-1), confidence

    def _saliency(self, positions: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        """positions (B, T', D) pooled per temporal position; temporal (B, Nt, D) fused queries → (B, T')."""
        if self.cfg.temporal_head == "scoring":
            scores = self.position_mlp(positions) @ self.query_mlp(temporal).transpose(1, 2)  # (B, T', Nt)
            return (scores / math.sqrt(positions.shape[-1])).amax(dim=-1)
        return self.seed_head(temporal)[..., : positions.shape[1]].amax(dim=1)

    def check_grid(self, grid: list[int], where: object) -> None:
        """Features on `grid` [T', H', W', D] fit this projector's input width and position tables."""
        t, h, w, d = grid
        cfg = self.cfg
        if d != self.video_dim:
            raise ConfigError(f"{where}: features of width {d}, the projector reads width {self.video_dim}")
        if t > cfg.max_temporal_positions or max(h, w) > cfg.max_spatial_positions:
            raise ConfigError(
                f"{where}: a {t} x {h} x {w} feature grid is past the projector's position tables "
                f"({cfg.max_temporal_positions} x {cfg.max_spatial_positions}); raise "
                "projector.max_temporal_positions / max_spatial_positions, or extract fewer frames"
            )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: Path) -> None:
        """projector.safetensors + projector.json (its config and widths); a few MB, never the backbones."""
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, directory / WEIGHTS_FILE
        )
        meta = {"projector": asdict(self.cfg), "video_dim": self.video_dim, "llm_dim": self.llm_dim}
        (directory / "projector.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path) -> Projector:
        try:
            meta = json.loads((directory / "projector.json").read_text())
            cfg = ProjectorConfig(**saved_projector(meta["projector"], directory))
            model = cls(cfg, meta["video_dim"], meta["llm_dim"])
            model.load_state_dict(load_file(directory / WEIGHTS_FILE))
        except (
            OSError,
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            RuntimeError,
            SafetensorError,
        ) as err:
            raise CheckpointError(f"cannot load the projector from {directory}: {err}") from err
        return model
