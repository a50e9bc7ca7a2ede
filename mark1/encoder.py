"""The frozen V-JEPA2 encoder as Mark-1 uses it: uint8 clips → patch features on a [T', H', W', D] grid."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import VJEPA2Model

from mark1.backbones import fingerprint, load_encoder
from mark1.config import Config
from mark1.errors import ConfigError
from mark1.video import normalize


@dataclass(frozen=True)
class EncoderOutput:
    """What an encoder's features are: which weights made them, from what frames, on which grid."""

    name: str
    fingerprint: str  # of the config and weights: two encoders with the same name can differ
    num_frames: int
    crop_size: int
    tubelet_size: int
    patch_size: int
    pool: int
    grid: tuple[int, int, int, int]  # [T', H', W', D]


class VideoEncoder:
    """Wraps a frozen VJEPA2Model: fp16 on CUDA (T4 has no bf16), fp32 on CPU; calls only the encoder trunk."""

    def __init__(self, model: VJEPA2Model, num_frames: int, pool: int = 1, name: str | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.name = name or model.config.name_or_path
        cfg = model.config
        self.num_frames, self.pool = num_frames, pool
        self.crop_size, self.tubelet_size, self.patch_size = cfg.crop_size, cfg.tubelet_size, cfg.patch_size
        side = cfg.crop_size // cfg.patch_size
        if side % pool:
            raise ConfigError(f"video.pool={pool} must divide the encoder's {side} x {side} patch grid")
        self.grid = [num_frames // cfg.tubelet_size, side // pool, side // pool, cfg.hidden_size]

    @classmethod
    def load(cls, cfg: Config, device: torch.device) -> VideoEncoder:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        model = load_encoder(cfg.encoder, device, dtype, cfg.allow_pickle_weights)
        return cls(model, cfg.video.num_frames, cfg.video.pool, name=cfg.encoder)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def describe(self) -> EncoderOutput:
        """What this encoder's features are (the cache builds its spec from it)."""
        return EncoderOutput(
            name=self.name,
            fingerprint=fingerprint(self.model, self.model.config.to_dict()),
            num_frames=self.num_frames,
            crop_size=self.crop_size,
            tubelet_size=self.tubelet_size,
            patch_size=self.patch_size,
            pool=self.pool,
            grid=tuple(self.grid),
        )

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, crop, crop) uint8 → (B, T', H', W', D) features in the encoder's dtype."""
        pixels = normalize(frames.to(self.device, non_blocking=True), self.dtype)
        # The trunk alone: VJEPA2Model.forward would also build and apply mask indices it does not need.
        tokens = self.model.encoder(pixel_values_videos=pixels).last_hidden_state  # (B, T'*H*W, D)
        t, side = self.grid[0], self.crop_size // self.patch_size
        grid = tokens.view(tokens.shape[0], t, side, side, -1)  # (B, T', H, W, D): Conv3d flattens t, h, w
        if self.pool > 1:
            pooled = F.avg_pool2d(grid.flatten(0, 1).permute(0, 3, 1, 2), self.pool)  # (B*T', D, H', W')
            grid = pooled.permute(0, 2, 3, 1).reshape(
                tokens.shape[0], t, side // self.pool, side // self.pool, -1
            )
        return grid
