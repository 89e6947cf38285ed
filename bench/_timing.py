"""Timing helpers shared by the bench scripts (run as ``python bench/<name>.py``, so importable by name)."""

from __future__ import annotations

import time

import torch


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
