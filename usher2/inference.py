"""Inference copies of the project's convolutional networks for the CPU.

A frozen network (loaded from a weights file, in eval mode) is copied once with

- each batch norm folded into the convolution that feeds it
  (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`; the pairs from an fx trace, or from
  ``nn.Sequential`` children where the network does not trace), and
- its parameters in channels-last memory layout, oneDNN's fast convolution path.

:class:`SplitSkipConv` replaces a U-Net decoder's ``conv(cat([h, skip]))`` by
``conv_h(h) + conv_skip(skip)`` (the enhancer's copy uses it; for the segmenter's smp decoder it
was slower, 19.7 vs 18.8 ms at batch 1, so that one keeps its concatenations).

The copy computes the same function; its outputs differ from the original's in the last float32
bits only (folding rounds ``w * gamma / sqrt(var + eps)`` once; channels-last changes the
summation order): ``tests/test_inference.py`` bounds the difference. On 2 cores, 256 x 256
frames, batch 1, interleaved runs: the shipped enhancer 41.2 -> 23.8 ms, the segmenter's
network (128 px) 24.2 -> 18.8 ms, the usresnet10t backbone 9.1 -> 6.2 ms. The enhancer's split
measured 25.7 -> 23.8 ms before every weight was restrided to channels-last, and within the
run-to-run noise after (21.8 vs 21.7 ms at batch 1, 24.9 vs 24.2 ms/frame at batch 4).
On a CUDA device the network is returned unchanged (not measured there).

**Freed memory.** A batch of 256-px frames makes activations of 4-16 MB each; glibc's malloc gives
such blocks back to the kernel when they are freed (``munmap``, or trimming the heap's top
above 128 kB), so the next batch page-faults them in again: on 2 cores the enhancer ran 22 ms a
frame at 4 frames a call, 17.5 ms with freed memory kept. :func:`keep_freed_memory` (called
once, the first time a CPU inference copy is made) tells malloc to keep up to
:data:`KEEP_FREED_MB` of free heap and to take blocks up to 32 MB from the heap, PyTorch's
advice for CPU inference (its guide suggests a caching allocator such as jemalloc) without a
preloaded library. The process then keeps its peak heap, less anything above that margin.
``USHER2_MALLOC=system`` in the environment leaves malloc as it is; other C libraries are left
as they are too.
"""

from __future__ import annotations

import copy
import ctypes
import itertools
import logging
import os
import platform

import torch
from torch import nn

__all__ = [
    "KEEP_FREED_MB",
    "SplitSkipConv",
    "fold_batchnorm",
    "inference_copy",
    "keep_freed_memory",
    "to_channels_last",
]

log = logging.getLogger(__name__)

#: Free heap (MB) malloc keeps instead of giving it back (:func:`keep_freed_memory`).
KEEP_FREED_MB = 256
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_MALLOC_SET: list[bool] = []


def keep_freed_memory(keep_mb: int = KEEP_FREED_MB) -> bool:
    """Make glibc's malloc keep freed activations for the next batch (see the module docstring):
    ``mallopt(M_TRIM_THRESHOLD, keep_mb MB)`` and ``mallopt(M_MMAP_THRESHOLD, 32 MB)``, glibc's
    largest. Once per process; True when set now or before. False (nothing changed) on another
    C library, where ``mallopt`` refuses, or with ``USHER2_MALLOC=system``.

    Example:
        >>> isinstance(keep_freed_memory(), bool)
        True
    """
    if _MALLOC_SET:
        return _MALLOC_SET[0]
    ok = False
    if os.environ.get("USHER2_MALLOC", "").lower() != "system" and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL(None)
            ok = bool(libc.mallopt(_M_TRIM_THRESHOLD, int(keep_mb) << 20)) and bool(
                libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
            )
        except (OSError, AttributeError) as exc:
            log.debug("mallopt unavailable (%s); malloc left as it is", exc)
    _MALLOC_SET.append(ok)
    log.debug("malloc keeps up to %d MB of freed memory: %s", keep_mb, ok)
    return ok


def _traced_pairs(net: nn.Module) -> list[tuple[str, str]]:
    """``(conv, batch norm)`` module names where the graph feeds a convolution's only output
    straight into a batch norm, each module called once (fx symbolic trace)."""
    gm = torch.fx.symbolic_trace(net)
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in gm.graph.nodes:
        src = node.args[0] if node.op == "call_module" and node.args else None
        if (
            isinstance(modules.get(node.target), nn.BatchNorm2d)
            and isinstance(src, torch.fx.Node)
            and src.op == "call_module"
            and isinstance(modules.get(src.target), nn.Conv2d)
            and len(src.users) == 1
            and calls[src.target] == calls[node.target] == 1
        ):
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _sequential_pairs(net: nn.Module) -> list[tuple[str, str]]:
    """``(conv, batch norm)`` names of consecutive children of an ``nn.Sequential``."""
    pairs = []
    for name, module in net.named_modules():
        if isinstance(module, nn.Sequential):
            kids = list(module.named_children())
            for (a, conv), (b, bn) in itertools.pairwise(kids):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + a, prefix + b))
    return pairs


def _replace(net: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, child, module)


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of the eval-mode ``net`` with its batch norms folded into the preceding
    convolutions (replaced by ``nn.Identity``); the copy keeps ``net``'s class and methods.

    The pairs come from an fx trace of the graph where the network traces (ResNet blocks keep
    conv and batch norm as attributes), else from consecutive ``nn.Sequential`` children.

    Raises:
        ValueError: ``net`` is in training mode (its batch norms use batch statistics).
    """
    if net.training:
        raise ValueError("fold_batchnorm needs a network in eval mode (net.eval())")
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    try:
        pairs = _traced_pairs(net)
    except Exception as exc:  # fx cannot trace data-dependent control flow
        log.debug("fx could not trace %s (%s); folding nn.Sequential pairs", type(net).__name__, exc)
        pairs = _sequential_pairs(net)
    # shares every parameter and buffer it does not fold: a backbone's large linear layers
    # (VGG's 120 M weights) are not held twice
    fast = copy.deepcopy(net, memo={id(t): t for t in (*net.parameters(), *net.buffers())})
    for conv, bn in pairs:
        norm = fast.get_submodule(bn)
        if norm.track_running_stats and norm.running_mean is not None:
            _replace(fast, conv, fuse_conv_bn_eval(fast.get_submodule(conv), norm))
            _replace(fast, bn, nn.Identity())
    return fast


def to_channels_last(net: nn.Module) -> nn.Module:
    """``net`` (changed in place: pass a copy) with each convolution's weight a new channels-last
    parameter; tensors it shares with another network are not touched (``Module.to`` would
    convert a shared parameter in place). Returns it."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            # restrided even where the shape is ambiguous (one input channel): a (16, 1, 3, 3)
            # weight left with NCHW strides made the whole enhancer run NCHW (29 vs 21 ms)
            w = m.weight.detach()
            m.weight = nn.Parameter(
                torch.empty_like(w, memory_format=torch.channels_last).copy_(w), requires_grad=m.weight.requires_grad
            )
    return net


def inference_copy(net: nn.Module, device: torch.device | str) -> nn.Module:
    """The network to run for inference on ``device``: on the CPU a folded, channels-last copy
    (see the module docstring) that shares ``net``'s other tensors; elsewhere ``net`` itself.
    ``net`` is left unchanged, its modules' training flags included (the copy is folded from its
    eval-mode function, then each module of ``net`` gets its own flag back). The copy's own
    parameters (the folded, restrided convolution weights) do not require gradients: a Grad-CAM on
    the copy computes the activations' gradients only. The first CPU copy calls
    :func:`keep_freed_memory`."""
    if torch.device(device).type != "cpu":
        return net
    keep_freed_memory()
    modes = [(m, m.training) for m in net.modules()]
    try:
        fast = to_channels_last(fold_batchnorm(net.eval())).eval()
    finally:
        for m, training in modes:
            m.training = training
    shared = {id(p) for p in net.parameters()}
    for p in fast.parameters():  # its own weights never train: no weight gradients in a heat map's backward pass
        if id(p) not in shared:
            p.requires_grad_(False)
    return fast


class SplitSkipConv(nn.Module):
    """An up block ``rest(conv(cat([h, skip])))`` computed as ``rest(conv_h(h) + conv_skip(skip))``:
    the convolution's weights split by input channel, so no concatenated tensor is built (in
    channels-last memory PyTorch's channel concatenation took a quarter of the generator's CPU
    time). The same function; the sum is rounded in another order (float32 last bits).

    Args:
        block: The up block (``Conv2d`` first; the rest, e.g. a folded batch norm and the
            activation, applied after the sum).
        h_channels: How many of the convolution's input channels come from ``h`` (first).
    """

    def __init__(self, block: nn.Sequential, h_channels: int) -> None:
        super().__init__()
        conv = block[0]
        if not isinstance(conv, nn.Conv2d) or not 0 < h_channels < conv.in_channels or conv.groups != 1:
            raise ValueError(f"SplitSkipConv needs a block starting with an ungrouped Conv2d, got {conv}")
        geometry = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation}
        w = conv.weight.detach()
        self.conv_h = nn.Conv2d(h_channels, conv.out_channels, conv.kernel_size, bias=False, **geometry)
        self.conv_skip = nn.Conv2d(
            conv.in_channels - h_channels, conv.out_channels, conv.kernel_size, bias=conv.bias is not None, **geometry
        )
        with torch.no_grad():
            self.conv_h.weight.copy_(w[:, :h_channels])
            self.conv_skip.weight.copy_(w[:, h_channels:])
            if conv.bias is not None:
                self.conv_skip.bias.copy_(conv.bias)
        for param in (*self.conv_h.parameters(), *self.conv_skip.parameters()):  # trainable as the conv was
            param.requires_grad_(conv.weight.requires_grad)
        self.rest = nn.Sequential(*list(block)[1:])

    def forward(self, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.rest(self.conv_h(h) + self.conv_skip(skip))
