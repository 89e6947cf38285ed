"""Timing helpers shared by the bench scripts (run as ``python bench/<name>.py``, so importable by name)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def seconds_per_call(fn: Callable[[Any], Any], x: Any, reps: int) -> float:
    """Mean wall time of ``fn(x)`` over ``reps`` calls, after one warm-up call."""
    fn(x)
    t = time.perf_counter()
    for _ in range(reps):
        fn(x)
    return (time.perf_counter() - t) / reps


def gpu_frames_per_second(
    net: torch.nn.Module, size: int, dtype: torch.dtype, batch: int = 256, reps: int = 10
) -> float:
    """Frames/s of ``net`` on CUDA for a ``(batch, 1, size, size)`` input; bf16/fp16 via autocast."""
    net = net.cuda().eval()
    x = torch.rand(batch, 1, size, size, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        for _ in range(3):
            net(x)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            net(x)
        torch.cuda.synchronize()
    return batch * reps / (time.perf_counter() - t)
