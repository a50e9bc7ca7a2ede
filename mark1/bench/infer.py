"""`mark1 infer`'s steps on one clip at RoadBuddy's size: decode (per backend), encode, answer."""

from __future__ import annotations

from pathlib import Path

import torch

from mark1.bench.measure import BenchResult, add_peak, reset_peak, timed
from mark1.bench.workload import CHOICES, INFER_CLIP, QUESTION, write_bench_clips
from mark1.encoder import VideoEncoder
from mark1.model.video_qa import VideoQAModel
from mark1.video import DECODERS, load_clip


def bench_infer(
    result: BenchResult,
    encoder: VideoEncoder,
    model: VideoQAModel,
    work: Path,
    clip: tuple[int, int, float] = INFER_CLIP,
    backends: tuple[str, ...] = tuple(DECODERS),
) -> None:
    """Seconds to decode (in this process, as infer does), encode and answer 4 choices."""
    path = write_bench_clips(work / "infer", 1, clip)[0]
    cpu = torch.device("cpu")
    decode = {
        b: timed(lambda b=b: load_clip(path, encoder.num_frames, encoder.crop_size, backend=b), cpu)
        for b in backends
    }
    frames = load_clip(path, encoder.num_frames, encoder.crop_size).frames[None]
    reset_peak(encoder.device)
    encode = timed(lambda: encoder(frames), encoder.device, repeat=3)
    features = encoder(frames)[0].to("cpu", torch.float16)
    answer = timed(lambda: model.answer(features, QUESTION, CHOICES), model.llm.device, repeat=3)
    for backend, seconds in decode.items():
        result.add("infer", f"decode {clip[1]}p ({backend})", seconds, "s")
    result.add("infer", "encode", encode, "s")
    result.add("infer", "answer (4 choices)", answer, "s")
    result.add(
        "infer", f"one question end to end ({backends[0]})", decode[backends[0]] + encode + answer, "s"
    )
    add_peak(result, "infer", encoder.device)
