"""pyradiomics' grey-level discretisation (``getBinEdges`` + ``binImage``), batched over ROIs.

pyradiomics bins the grey levels *inside* each ROI (``imageoperations.binImage``) with edges from
``imageoperations.getBinEdges`` and ``numpy.digitize`` (a value ``x`` gets the number of edges
``<= x``; every bin is half-open ``[lower, upper)``):

* ``binWidth`` ``W``: edges ``lb, lb + W, ...`` from ``lb = min - (min % W)`` (the largest multiple
  of ``W`` at most the ROI's minimum) up to (not including) ``max + 2W``, so level
  ``floor(x / W) - floor(min / W) + 1``;
* ``binCount`` ``N``: ``numpy.histogram``'s ``N + 1`` equally spaced edges from the ROI's minimum to
  its maximum (``+-0.5`` for a flat ROI), the last edge ``+1`` so that the maximum falls in bin ``N``.

**Exactly as pyradiomics, float32 included.** pyradiomics hands the image to numpy as float32,
so ``min % W``, ``lb``, ``max + 2W``, the ``numpy.arange`` length and second value and the
``numpy.linspace`` edges are float32 arithmetic (numpy 2's weak Python scalars), while
``numpy.arange`` fills its float64 array as ``lb + i * (float32(lb + W) - lb)``. This module does
the same operations in the same dtypes, then compares in float64, which is exact for float32
values. ``image`` is therefore rounded to float32 first, as pyradiomics does; the bin indices
equal ``binImage``'s as integers (``tests/features/torchrad/test_discretise.py``).

**Batched.** Per-ROI minima and maxima are masked reductions. With ``binWidth`` the number of
edges differs per ROI; instead of padding the edges, each value's bin is guessed as
``floor((x - lb) / step)`` and settled by comparing ``x`` with the exact edges of the three
candidates around the guess, so nothing waits for the device. With ``binCount`` every ROI has
``N + 1`` edges and ``torch.searchsorted`` counts them.

* :func:`discretise`: the binned image (levels ``1..Ng`` inside each ROI, 0 outside) and ``Ng``;
* :func:`check_roi`: pyradiomics' ``checkMask`` refusals (a single pixel, a line, too small);
* :func:`crop_boxes`: each ROI's bounding box.
"""

from __future__ import annotations

import torch

from usher2.io.errors import InputError

__all__ = ["check_roi", "crop_boxes", "discretise"]


def _check_batch(image: torch.Tensor | None, mask: torch.Tensor) -> None:
    if mask.dim() != 3 or mask.dtype != torch.bool:
        raise InputError("mask", "a bool tensor (B, H, W)", f"{mask.dtype} of shape {tuple(mask.shape)}")
    if image is not None and image.shape != mask.shape:
        raise InputError("image", f"the mask's shape {tuple(mask.shape)}", f"shape {tuple(image.shape)}")


def crop_boxes(mask: torch.Tensor) -> torch.Tensor:
    """Each ROI's bounding box, ``(B, 4)`` int64 ``(y0, y1, x0, x1)``, half-open (``mask[b, y0:y1, x0:x1]``).

    An empty ROI gets ``(0, 0, 0, 0)``.

    Example:
        >>> m = torch.zeros(2, 5, 6, dtype=torch.bool); m[0, 1:3, 2:5] = True; m[1, 4, 0] = True
        >>> crop_boxes(m).tolist()
        [[1, 3, 2, 5], [4, 5, 0, 1]]
    """
    _check_batch(None, mask)
    _, h, w = mask.shape
    rows, cols = mask.any(2), mask.any(1)  # (B, H), (B, W)
    ys = torch.arange(h, device=mask.device)
    xs = torch.arange(w, device=mask.device)
    y0 = torch.where(rows, ys, h).amin(1)
    y1 = torch.where(rows, ys + 1, 0).amax(1)
    x0 = torch.where(cols, xs, w).amin(1)
    x1 = torch.where(cols, xs + 1, 0).amax(1)
    box = torch.stack([y0, y1, x0, x1], 1)
    return torch.where(rows.any(1, keepdim=True), box, 0)


def check_roi(mask: torch.Tensor, minimum_dimensions: int = 2, minimum_size: int | None = None) -> None:
    """Refuse the ROIs pyradiomics' ``imageoperations.checkMask`` refuses, naming the ROI.

    pyradiomics counts the dimensions in which the ROI's bounding box is wider than one pixel:
    none (a single pixel) is always refused, fewer than ``minimumROIDimensions`` (2 by default,
    so a 1-pixel-wide line) too; with ``minimumROISize`` an ROI of at most that many pixels is
    refused as well. An empty ROI (pyradiomics: label not present) is refused too.

    Args:
        mask: ``(B, H, W)`` bool.
        minimum_dimensions: pyradiomics' ``minimumROIDimensions`` (1 or 2 for 2D masks).
        minimum_size: pyradiomics' ``minimumROISize``; ``None`` skips the size check.

    Raises:
        InputError: Naming the first refused ROI (its index in the batch) and why.

    Example:
        >>> m = torch.zeros(2, 8, 8, dtype=torch.bool); m[0, 2:5, 2:5] = True; m[1, 1:7, 3] = True
        >>> check_roi(m[:1])
        >>> check_roi(m)
        Traceback (most recent call last):
        ...
        usher2.io.errors.InputError: mask 1 of the batch: expected a region pyradiomics can measure \
(bounding box wider than 1 pixel in at least 2 dimensions), got a 6 x 1 pixel bounding box: fewer than 2 dimensions
    """
    _check_batch(None, mask)
    box = crop_boxes(mask)
    size = torch.stack([box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]], 1)
    count = mask.sum((1, 2))
    ndims = (size > 1).sum(1)
    bad = (count == 0) | (ndims == 0) | (ndims < minimum_dimensions)
    if minimum_size is not None:
        bad |= count <= minimum_size
    if not bool(bad.any()):
        return
    i = int(bad.nonzero()[0, 0])
    hw = f"{int(size[i, 0])} x {int(size[i, 1])} pixel bounding box"
    expected = (
        "a region pyradiomics can measure (bounding box wider than 1 pixel in at least "
        f"{minimum_dimensions} dimensions)"
    )
    if int(count[i]) == 0:
        got = "an empty mask"
    elif int(ndims[i]) == 0:
        got = "a single pixel"
    elif int(ndims[i]) < minimum_dimensions:
        got = f"a {hw}: fewer than {minimum_dimensions} dimensions"
    else:
        got = f"{int(count[i])} pixels (pyradiomics' minimumROISize {minimum_size} needs more)"
    raise InputError(f"mask {i} of the batch", expected, got)


def _bin_width_levels(x: torch.Tensor, vmin: torch.Tensor, vmax: torch.Tensor, width: float) -> torch.Tensor:
    """Number of ``getBinEdges`` edges ``<= x`` with ``binWidth`` (float32 edges as numpy makes them)."""
    w32 = torch.tensor(width, dtype=torch.float32, device=x.device)
    # numpy's float32 ``min % W`` (npy_divmodf: fmod, then + W when the signs differ)
    mod = torch.fmod(vmin, w32)
    mod = torch.where((mod != 0) & ((mod < 0) != (w32 < 0)), mod + w32, mod)
    low = vmin - mod
    high = vmax + torch.tensor(2 * width, dtype=torch.float32, device=x.device)
    # numpy.arange(low, high, W): length ceil((high - low) / W) in float32 (numpy scalars), a float64
    # array holding low, float32(low + W), then low + i * (second - low)
    n = torch.ceil((high - low) / w32).to(torch.int64)
    low64 = low.double()
    step = (low + w32).double() - low64
    flat = n == 1  # pyradiomics then uses the edges [low - 0.5, low + 0.5]
    start = torch.where(flat, low64 - 0.5, low64)
    step = torch.where(flat, torch.ones_like(step), step)
    n = torch.where(flat, torch.full_like(n, 2), n)

    start, step = start[:, None, None], step[:, None, None]
    last = (n - 1).double()[:, None, None]
    xd = x.double()
    # the float64 guess is off by at most one edge (rounding at ~1e-16 of the index); the three
    # exact comparisons around it settle the count of edges <= x. (For huge values float32
    # ``lb + W`` may round back to ``lb``: all edges equal, step 0, every value counts them all.)
    guess = torch.where(step > 0, torch.floor((xd - start) / step).clamp(min=0), last)
    guess = torch.minimum(guess, last)
    levels = (guess - 1).clamp(min=0)
    for j in (-1.0, 0.0, 1.0):
        i = guess + j
        levels += ((start + i * step <= xd) & (i >= 0) & (i <= last)).double()
    # huge values, where float32 ``max + 2W`` rounds down to ``lb``: numpy.arange gives no edges, digitize 0
    return torch.where(last >= 0, levels, 0.0).to(torch.int64)


def _bin_count_levels(x: torch.Tensor, vmin: torch.Tensor, vmax: torch.Tensor, count: int) -> torch.Tensor:
    """Number of ``numpy.histogram(values, count)`` edges (last one + 1) ``<= x``, in float32 as numpy."""
    flat = vmin == vmax
    first = torch.where(flat, vmin - 0.5, vmin)
    last = torch.where(flat, vmax + 0.5, vmax)
    # numpy.linspace(first, last, count + 1) in float32: i * (delta / count) + first, last edge = last
    delta = last - first
    step = delta / count
    i = torch.arange(count + 1, device=x.device, dtype=torch.float32)
    scaled = torch.where((step == 0)[:, None], (i / count)[None] * delta[:, None], i[None] * step[:, None])
    edges = scaled + first[:, None]
    edges[:, -1] = last + 1  # pyradiomics: binEdges[-1] += 1
    b = x.shape[0]
    return torch.searchsorted(edges.double().contiguous(), x.double().reshape(b, -1).contiguous(), right=True).reshape(
        x.shape
    )


def discretise(
    image: torch.Tensor,
    mask: torch.Tensor,
    bin_width: float | None = None,
    bin_count: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """pyradiomics' discretised grey levels of each ROI (``imageoperations.binImage``).

    Args:
        image: ``(B, H, W)`` float grey levels (rounded to float32, as pyradiomics sees them).
        mask: ``(B, H, W)`` bool ROIs; ROIs of different sizes are zero-padded (False).
        bin_width: pyradiomics' ``binWidth`` (usher2 uses 8).
        bin_count: pyradiomics' ``binCount``; give exactly one of the two.

    Returns:
        ``(binned, n_levels)``: ``binned`` ``(B, H, W)`` int64, the level ``1..`` of each ROI pixel
        (0 outside the ROI); ``n_levels`` ``(B,)`` int64, pyradiomics' ``Ng`` (the highest level in
        the ROI, the size of the texture matrices; 0 for an empty ROI).

    Raises:
        InputError: Neither or both of ``bin_width`` and ``bin_count``, a non-positive one, or
            mismatched shapes.

    Example:
        >>> img = torch.tensor([[[54.0, 80.0, 166.0], [7.0, 125.0, 150.0]]])
        >>> m = torch.tensor([[[True, True, True], [False, True, True]]])
        >>> binned, ng = discretise(img, m, bin_width=25)  # edges 50, 75, ..., 175 (pyradiomics' example)
        >>> binned.tolist(), ng.tolist()
        ([[[1, 2, 5], [0, 4, 5]]], [5])
        >>> discretise(img, m, bin_count=4)[0].tolist()
        [[[1, 1, 4], [0, 3, 4]]]
    """
    _check_batch(image, mask)
    if (bin_width is None) == (bin_count is None):
        raise InputError(
            "discretise", "exactly one of bin_width and bin_count", f"bin_width={bin_width}, bin_count={bin_count}"
        )
    if bin_width is not None and not bin_width > 0:
        raise InputError("bin_width", "a positive bin width", str(bin_width))
    if bin_count is not None and (int(bin_count) != bin_count or bin_count < 1):
        raise InputError("bin_count", "a positive whole number of bins", str(bin_count))

    x = image.to(torch.float32)
    inf = torch.tensor(float("inf"), dtype=torch.float32, device=x.device)
    vmin = torch.where(mask, x, inf).amin((1, 2))
    vmax = torch.where(mask, x, -inf).amax((1, 2))
    empty = ~mask.any(2).any(1)
    vmin = torch.where(empty, torch.zeros_like(vmin), vmin)  # keeps empty ROIs finite; they bin to 0
    vmax = torch.where(empty, torch.zeros_like(vmax), vmax)
    if bin_count is not None:
        levels = _bin_count_levels(x, vmin, vmax, int(bin_count))
    else:
        levels = _bin_width_levels(x, vmin, vmax, float(bin_width))  # type: ignore[arg-type]
    binned = torch.where(mask, levels, 0)
    return binned, binned.amax((1, 2))
