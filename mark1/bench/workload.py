"""What the benchmarks run on: the clips they write, the question they ask, and the backbones at either size.

`--size full` builds V-JEPA2 ViT-g and Qwen3-0.6B (or another LLM architecture, `--llm`) from their published
configs with random weights (nothing is downloaded), so a job can be sized before fetching weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    PretrainedConfig,
    VJEPA2Config,
    VJEPA2Model,
)

from mark1.backbones import causal_lm_attention, load_encoder
from mark1.config import CONFIG_DIR, Config, LLMConfig, load_config, mark1_home
from mark1.encoder import VideoEncoder
from mark1.errors import ConfigError
from mark1.model.llm import FrozenLLM
from mark1.model.projector import Projector
from mark1.model.video_qa import VideoQAModel
from mark1.synthetic import SignClip, write_video
from mark1.tiny import build_tiny_tokenizer

QUESTION, CHOICES = "Biển báo trong video có màu gì?", ["A. Đỏ", "B. Xanh lá", "C. Xanh dương", "D. Vàng"]
BENCH_CLIP = (1280, 720, 10.0)  # what the extract and train benches write: a dashcam's 720p, 30 fps, 10 s
INFER_CLIP = (2560, 1440, 10.0)  # RoadBuddy's clips: 1440p, 30 fps, 5-14 s
# The real backbones' architectures (facebook/vjepa2-vitg-fpc64-256, Qwen/Qwen3-0.6B as configs/models/ has
# them): the sizes that set memory and FLOPs; the rest are transformers' defaults. ViT-g's predictor is cut
# to one layer: Mark-1 never runs it.
FULL_ENCODER, FULL_LLM = CONFIG_DIR / "models" / "vjepa2-vitg-fpc64-256.json", "qwen3-0.6b"


def read_llm_config(architecture: str) -> tuple[PretrainedConfig, Path]:
    """The causal LM config `architecture` names (as `mark1 plan` reads it), checked before any work."""
    from mark1.plan import read_config

    config, file = read_config(architecture)
    causal_lm_attention(config, str(file))
    byte_tokens = len(build_tiny_tokenizer())
    if config.get_text_config().vocab_size < byte_tokens:
        raise ConfigError(
            f"{file}: its vocabulary is smaller than the benchmark's byte tokenizer ({byte_tokens} tokens)"
        )
    return config, file


def random_llm(architecture: str, llm: LLMConfig, device: torch.device) -> FrozenLLM:
    """A frozen LLM of a real architecture (a shipped name such as qwen3-8b, a hub id or a config.json; see
    `mark1 plan`) with random weights and the byte tokenizer, whose ids are valid in any real vocabulary.

    Quantized weights come only from `from_pretrained`, so for int8/nf4 the random fp16 weights are written
    once under $MARK1_HOME/random/ and loaded back through `load_llm`: the path a real LLM takes.
    """
    config, file = read_llm_config(architecture)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if llm.quantization == "none":
        attention = causal_lm_attention(config, str(file))
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention)
        return FrozenLLM(model, build_tiny_tokenizer(), llm.gradient_checkpointing)
    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:8]  # one folder per architecture
    directory = (
        mark1_home() / "random" / f"{file.parent.name if file.stem == 'config' else file.stem}-{digest}"
    )
    if not (directory / "config.json").is_file():
        work = directory.with_name(f".writing-{os.getpid()}")
        with torch.device(device):  # initialised where it is fast; written in fp16
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float16)
        model.save_pretrained(work)
        build_tiny_tokenizer().save_pretrained(work)
        del model
        os.replace(work, directory)
    return FrozenLLM.load(dataclasses.replace(llm, name=str(directory)), (device,))


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
    cfg: Config, size: str, device: torch.device, full_llm: str = FULL_LLM
) -> tuple[Config, VideoEncoder, VideoQAModel]:
    """The encoder and the model at `size`, and the config they were built with (full: the seed's projector,
    and `full_llm`'s architecture with random weights, quantized as `llm.quantization` says)."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if size == "full":
        torch.manual_seed(0)
        read_llm_config(full_llm)  # a wrong name fails now, not after building ViT-g
        cfg = dataclasses.replace(cfg, projector=load_config("mark1-vjepa2-qwen3").projector)
        encoder_model = VJEPA2Model(VJEPA2Config.from_json_file(FULL_ENCODER)).to(device, dtype).eval()
        llm = random_llm(full_llm, cfg.llm, device)
    else:
        encoder_model = load_encoder(cfg.encoder, device, dtype)
        llm = FrozenLLM.load(cfg.llm, (device,), cfg.allow_pickle_weights)
    encoder = VideoEncoder(encoder_model, cfg.video.num_frames, cfg.video.pool, name=f"bench-{size}")
    projector = Projector(cfg.projector, encoder.grid[-1], llm.hidden_size)
    return cfg, encoder, VideoQAModel(llm, projector, device)
