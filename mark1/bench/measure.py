"""How the benchmarks measure: timing with GPU syncs, peak memory, counted FLOPs, the device's matmul peak."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class BenchResult:
    machine: str
    size: str
    llm: str = ""  # the LLM measured: its architecture or directory, and its precision
    rows: list[dict[str, Any]] = field(default_factory=list)  # {"stage", "figure", "value", "unit"}

    def add(self, stage: str, figure: str, value: float, unit: str) -> None:
        self.rows.append({"stage": stage, "figure": figure, "value": round(float(value), 6), "unit": unit})


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    )


def timed(fn: Callable[[], Any], device: torch.device, repeat: int = 1) -> float:
    """Seconds per call (median of `repeat`, after one warm-up), synchronising the GPU around each call."""
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def add_peak(result: BenchResult, stage: str, device: torch.device, what: str = "peak GPU memory") -> float:
    """Peak memory allocated since the last reset (CUDA only: torch does not track CPU allocations)."""
    if device.type != "cuda":
        return 0.0
    peak = torch.cuda.max_memory_allocated(device) / 1e9
    result.add(stage, what, peak, "GB")
    return peak


def matmul_peak_flops(device: torch.device) -> float:
    """FLOP/s of a large square matmul in the dtype training computes in (fp16 on CUDA, fp32 on CPU): the
    measured ceiling that a training step's throughput is compared with."""
    n, dtype = (8192, torch.float16) if device.type == "cuda" else (2048, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, device, repeat=5)


def largest_batch(peaks_gib: dict[int, float], budget_gib: float) -> int:
    """The largest batch whose peak memory fits `budget_gib`, from peaks measured at two batch sizes
    (memory grows linearly with the batch: fixed weights and optimizer state, activations per sample)."""
    (b1, m1), (b2, m2) = sorted(peaks_gib.items())[:2]
    per_sample = (m2 - m1) / (b2 - b1)
    fixed = m1 - per_sample * b1
    if per_sample <= 0:
        return b2
    return max(0, int((budget_gib - fixed) / per_sample))


def _cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


# torch counts the GPU attention kernels but not the CPU one, which would hide the attention's FLOPs here.
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


def counted_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the matmuls, convolutions and attention that `fn` runs, forward and backward, as torch's
    FlopCounterMode counts them from the ops actually dispatched: a frozen weight costs no weight gradient,
    and the LLM's head counts only at the answer positions."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        fn()
    return counter.get_total_flops()
