"""What the benchmarks run on: the clips they write, the question they ask, and the backbones at either size.

`--size full` builds V-JEPA2 ViT-g and Qwen3-0.6B from their published configs with random weights
(nothing is downloaded), so a job can be sized before fetching weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM, VJEPA2Config, VJEPA2Model

from mark1.backbones import load_encoder
from mark1.config import CONFIG_DIR, Config, load_config
from mark1.encoder import VideoEncoder
from mark1.model.llm import FrozenLLM
from mark1.model.projector import Projector
from mark1.model.video_qa import VideoQAModel
from mark1.synthetic import SignClip, write_video
from mark1.tiny import build_tiny_tokenizer

QUESTION, CHOICES = "Biển báo trong video có màu gì?", ["A. Đỏ", "B. Xanh lá", "C. Xanh dương", "D. Vàng"]
BENCH_CLIP = (1280, 720, 10.0)  # what the extract and train benches write: a dashcam's 720p, 30 fps, 10 s
INFER_CLIP = (2560, 1440, 10.0)  # RoadBuddy's clips: 1440p, 30 fps, 5-14 s
# The real backbones' architectures (facebook/vjepa2-vitg-fpc64-256, Qwen/Qwen3-0.6B): the sizes that set
# memory and FLOPs; the rest are transformers' defaults. ViT-g's predictor is cut to one layer: Mark-1 never
# runs it.
FULL_ENCODER, FULL_LLM = (
    CONFIG_DIR / "models" / "vjepa2-vitg-fpc64-256.json",
    CONFIG_DIR / "models" / "qwen3-0.6b.json",
)


def write_bench_clips(
    directory: Path, count: int, clip: tuple[int, int, float] = BENCH_CLIP, keyframe_every: int | None = None
) -> list[Path]:
    """`count` 30 fps clips of (width, height, seconds), a keyframe a second unless `keyframe_every` frames."""
    width, height, seconds = clip
    paths = []
    for i in range(count):
        path = directory / f"bench_{i:03d}.mp4"
        write_video(
            path,
            SignClip(path.stem, 30, seconds, width, height, "Đỏ", "Bên trái", 1.0, 2.5, i),
            keyframe_every,
        )
        paths.append(path)
    return paths


def build_backbones(
    cfg: Config, size: str, device: torch.device
) -> tuple[Config, VideoEncoder, VideoQAModel]:
    """The encoder and the model at `size`, and the config they were built with (full: the seed's projector)."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if size == "full":
        torch.manual_seed(0)
        cfg = dataclasses.replace(cfg, projector=load_config("mark1-vjepa2-qwen3").projector)
        encoder_model = VJEPA2Model(VJEPA2Config.from_json_file(FULL_ENCODER)).to(device, dtype).eval()
        # Qwen3's vocabulary is larger than the byte tokenizer's: every byte id is valid in it.
        llm_model = Qwen3ForCausalLM(Qwen3Config.from_json_file(FULL_LLM)).to(device, dtype)
        llm = FrozenLLM(llm_model, build_tiny_tokenizer(), cfg.llm.gradient_checkpointing)
    else:
        encoder_model = load_encoder(cfg.encoder, device, dtype)
        llm = FrozenLLM.load(cfg.llm, (device,), cfg.allow_pickle_weights)
    encoder = VideoEncoder(encoder_model, cfg.video.num_frames, cfg.video.pool, name=f"bench-{size}")
    projector = Projector(cfg.projector, encoder.grid[-1], llm.hidden_size)
    return cfg, encoder, VideoQAModel(llm, projector, device)
