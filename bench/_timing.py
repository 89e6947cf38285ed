"""Timing helpers shared by the bench scripts (run as ``python bench/<name>.py``, so importable by name)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch


def cpu_inputs(threads: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Set torch and OpenCV to ``threads`` CPU threads; a seeded ``(1, 1, size, size)`` frame and
    the same frame 8 times (the batch-1 and batch-8 inputs of the CPU speed tables)."""
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    x1 = np.random.default_rng(0).random((1, 1, size, size)).astype(np.float32)
    return x1, np.repeat(x1, 8, axis=0)


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
