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

**The compact layout** (:class:`RoiPixels`). Only the ROI pixels matter, so they are gathered
once per batch of masks into ``(N,)`` lists, ROI by ROI (row-major within each): per-pixel work
runs on ``N`` values instead of the padded ``B x H x W`` (5x fewer on 256-px ultrasound frames),
per-ROI sums, minima and maxima are segment reductions over that order (numpy's ``reduceat`` on
the CPU, ``torch.segment_reduce`` elsewhere: the same values, tested equal), and the layout
caches the neighbour pairs the texture classes need. :func:`discretise` gathers, bins with
:func:`bin_pixels` and scatters back; the engine calls :func:`bin_pixels` directly.

**Binning, batched.** With ``binWidth`` the number of edges differs per ROI; instead of padding
the edges, each value's bin is guessed as ``floor((x - lb) / step)`` and settled by comparing
``x`` with the exact edges of the three candidates around the guess, in float arithmetic
(``[e <= x] = 1 - max(sign(e - x), 0)``, exact since ``e - x`` has the sign of the exact
difference; in-place, as these passes are memory-bound on the CPU), so nothing waits for the
device. With ``binCount`` every ROI has ``N + 1`` edges and ``torch.searchsorted`` counts them
on the ROIs' pixels packed into rows.

* :func:`discretise`: the binned image (levels ``1..Ng`` inside each ROI, 0 outside) and ``Ng``;
* :func:`bin_pixels`: the same levels for the ROI pixels of a :class:`RoiPixels` layout;
* :func:`check_roi`: pyradiomics' ``checkMask`` refusals (a single pixel, a line, too small);
* :func:`crop_boxes`: each ROI's bounding box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from usher2.io.errors import InputError

__all__ = ["RoiPixels", "bin_pixels", "check_roi", "crop_boxes", "discretise"]


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


@dataclass(frozen=True, eq=False)
class RoiPixels:
    """Where the pixels of each ROI of a ``(B, H, W)`` batch lie: the compact layout.

    The ROI pixels, ROI by ROI and row-major within each, as ``(N,)`` flat indices into the batch;
    per-pixel work then runs on ``N`` values instead of ``B * H * W``, and per-ROI sums are
    segment reductions in that order (so a ROI's values never depend on the others of its batch).
    Build it once per batch of masks (:meth:`from_mask`) and reuse it for every image type.

    Attributes:
        shape: ``(B, H, W)`` of the batch the indices point into.
        index: ``(N,)`` int64 flat index of each ROI pixel in the batch.
        roi: ``(N,)`` int64, which ROI each pixel belongs to.
        counts: ``(B,)`` int64 pixels per ROI.

    Example:
        >>> m = torch.zeros(2, 3, 4, dtype=torch.bool); m[0, 1, 1:3] = True; m[1, 0, 0] = m[1, 2, 3] = True
        >>> px = RoiPixels.from_mask(m)
        >>> px.index.tolist(), px.counts.tolist(), px.sum(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist()
        ([5, 6, 12, 23], [2, 2], [3.0, 7.0])
    """

    shape: tuple[int, int, int]
    index: torch.Tensor
    roi: torch.Tensor
    counts: torch.Tensor
    _pairs: dict[tuple[tuple[int, int], ...], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> RoiPixels:
        """The layout of the ``(B, H, W)`` bool ``mask``'s ROIs (one device sync: ``N``)."""
        _check_batch(None, mask)
        b, h, w = mask.shape
        if mask.device.type == "cpu":  # numpy's flatnonzero is several times faster there, the same indices
            index = torch.from_numpy(np.flatnonzero(mask.numpy()))
        else:
            index = torch.nonzero(mask.reshape(-1)).reshape(-1)
        roi = torch.div(index, h * w, rounding_mode="floor")
        return cls((b, h, w), index, roi, torch.bincount(roi, minlength=b))

    @property
    def device(self) -> torch.device:
        return self.index.device

    @cached_property
    def n_max(self) -> int:
        """The most pixels of a ROI (the width of :meth:`packed`; one device sync)."""
        return int(self.counts.max()) if self.counts.numel() else 0

    @cached_property
    def first(self) -> torch.Tensor:
        """``(B,)`` the layout position of each ROI's first pixel."""
        return torch.cumsum(self.counts, 0) - self.counts

    @cached_property
    def slot(self) -> torch.Tensor:
        """``(N,)`` each pixel's flat position in :meth:`packed`'s ``(B, n_max)``: ``roi * n_max + rank``."""
        rank = torch.arange(self.index.numel(), device=self.device) - self.per_pixel(self.first)
        return self.roi * self.n_max + rank

    def values(self, image: torch.Tensor) -> torch.Tensor:
        """``(N,)`` the ROI pixels of ``image`` ``(B, H, W)``."""
        return image.reshape(-1).index_select(0, self.index)

    def per_pixel(self, per_roi: torch.Tensor) -> torch.Tensor:
        """``(N,)`` each pixel's entry of ``per_roi`` ``(B,)``."""
        return per_roi.index_select(0, self.roi)

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)``: ``values`` ``(N,)`` at the ROI pixels, 0 elsewhere."""
        out = torch.zeros(self.shape[0] * self.shape[1] * self.shape[2], dtype=values.dtype, device=self.device)
        return out.index_copy_(0, self.index, values).view(self.shape)

    def packed(self, values: torch.Tensor, fill: float) -> torch.Tensor:
        """``(B, n_max)``: each ROI's ``values`` in one row (in layout order), padded with ``fill``."""
        out = torch.full((self.shape[0] * self.n_max,), fill, dtype=values.dtype, device=self.device)
        return out.index_copy_(0, self.slot, values).view(self.shape[0], self.n_max)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``(B,)`` per-ROI sums of float ``values`` ``(N,)`` (in layout order; 0 for an empty ROI)."""
        return self.reduce(values, "sum", 0.0)

    def reduce(self, values: torch.Tensor, how: str, empty: float, use_numpy: bool | None = None) -> torch.Tensor:
        """``(B,)`` per-ROI ``"sum"``, ``"min"`` or ``"max"`` of ``values`` ``(N,)``, ``empty`` for an
        empty ROI. ``use_numpy``: numpy's ``reduceat`` (None: on the CPU, where it is several times
        faster than torch's segment reductions) or ``torch.segment_reduce``."""
        b = self.shape[0]
        if use_numpy is None:
            use_numpy = values.device.type == "cpu"
        if values.numel() == 0:
            return torch.full((b,), empty, dtype=values.dtype, device=values.device)
        if use_numpy:
            ufunc = {"sum": np.add, "min": np.minimum, "max": np.maximum}[how]
            first, counts = self._numpy_bounds
            out = ufunc.reduceat(values.numpy(), first)  # an empty segment gives its next value: replaced
            out = torch.from_numpy(np.where(counts > 0, out, np.asarray(empty, out.dtype)))
        else:
            out = torch.segment_reduce(values, how, lengths=self.counts)
            out = torch.where(self.counts > 0, out, torch.as_tensor(empty, dtype=out.dtype, device=out.device))
        return out

    @cached_property
    def _numpy_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        first = self.first.numpy().clip(max=max(self.index.numel() - 1, 0))
        return first, self.counts.numpy()

    def cropped(self, box: torch.Tensor) -> RoiPixels:
        """The same pixels in the batch of each ROI's box ``(B, h, w)`` (``box`` ``(B, 4)`` from
        :func:`crop_boxes`, ``h``, ``w`` the largest box; one device sync), cropped top-left."""
        b, hh, ww = self.shape
        h, w = (int(v) for v in (box[:, 1::2] - box[:, 0::2]).amax(0).tolist())
        y = torch.div(self.index, ww, rounding_mode="floor") % hh - self.per_pixel(box[:, 0])
        x = self.index % ww - self.per_pixel(box[:, 2])
        return RoiPixels((b, h, w), (self.roi * h + y) * w + x, self.roi, self.counts)

    def pairs(self, offsets: tuple[tuple[int, int], ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(src, dst, group)`` ``(M,)`` int32: layout positions of every pixel pair ``(y, x)``,
        ``(y + dy, x + dx)`` with both pixels in the same ROI, for each offset ``(dy, dx)``, and
        ``roi * len(offsets) + offset number`` (cached: the geometry serves every image type)."""
        if offsets not in self._pairs:
            b, h, w = self.shape
            n = self.index.numel()
            where = torch.full((b * h * w,), -1, dtype=torch.int64, device=self.device)
            where.index_copy_(0, self.index, torch.arange(n, device=self.device))
            y = torch.div(self.index, w, rounding_mode="floor") % h
            x = self.index % w
            out = []
            for a, (dy, dx) in enumerate(offsets):
                inside = (y + dy >= 0) & (y + dy < h) & (x + dx >= 0) & (x + dx < w)
                dst = where.index_select(0, torch.where(inside, self.index + dy * w + dx, self.index))
                src = torch.nonzero(inside & (dst >= 0)).reshape(-1)
                out.append((src, dst.index_select(0, src), self.roi.index_select(0, src) * len(offsets) + a))
            # int32: half the memory traffic of the per-image-type gathers (N < 2**31 pixels)
            cat = tuple(torch.cat(parts).to(torch.int32) for parts in zip(*out, strict=True))
            self._pairs[offsets] = cat  # type: ignore[assignment]
        return self._pairs[offsets]


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


def _bin_width_levels(
    x: torch.Tensor, px: RoiPixels, vmin: torch.Tensor, vmax: torch.Tensor, width: float
) -> torch.Tensor:
    """Number of ``getBinEdges`` edges ``<= x`` with ``binWidth`` (float32 edges as numpy makes them).

    ``x`` ``(N,)`` float32, the ROI pixels; ``vmin``, ``vmax`` ``(B,)`` float32 per ROI.
    """
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
    last = (n - 1).double()
    if bool((step <= 0).any() | (last < 0).any()):
        return _bin_width_levels_exact(x, px, start, step, last)
    # per ROI: the start, the step and the last edge's index; each pixel reads its ROI's
    start, step, last = (px.per_pixel(v) for v in (start, step, last))
    xd = x.double()
    # the float64 guess g is off by at most one edge (rounding at ~1e-16 of the index); the exact
    # comparisons with edges g - 1, g, g + 1 settle the count of edges <= x: (g - 1) plus one per
    # edge <= x (edge -1 lies below every ROI value, so g = 0 needs no special case), at most all
    # ``last + 1`` edges. Float arithmetic throughout (cheaper than bool tensors on the CPU):
    # ``[e <= x] = 1 - max(sign(e - x), 0)``, exact because e - x has the sign of the exact difference.
    guess = torch.sub(xd, start).div_(step).floor_().clamp_(min=0)
    torch.minimum(guess, last, out=guess)
    levels = guess - 1
    edge = torch.empty_like(guess)
    for j in (-1.0, 0.0, 1.0):
        torch.add(guess, j, out=edge)
        levels -= edge.mul_(step).add_(start).sub_(xd).sign_().clamp_(min=0)
    levels += 3
    return torch.minimum(levels, last.add_(1), out=levels).to(torch.int64)


def _bin_width_levels_exact(
    x: torch.Tensor, px: RoiPixels, start: torch.Tensor, step: torch.Tensor, last: torch.Tensor
) -> torch.Tensor:
    """The count of edges ``<= x`` where a ROI's float32 edges degenerate (huge values: ``lb + W``
    rounds back to ``lb``, all edges equal; or ``max + 2W`` to ``lb``: no edge at all)."""
    start, step, last = (px.per_pixel(v) for v in (start, step, last))
    xd = x.double()
    guess = torch.where(step > 0, torch.floor((xd - start) / step).clamp(min=0), last)
    guess = torch.minimum(guess, last)
    levels = (guess - 1).clamp(min=0)
    for j in (-1.0, 0.0, 1.0):
        i = guess + j
        levels += ((start + i * step <= xd) & (i >= 0) & (i <= last)).double()
    # numpy.arange gives no edges: digitize 0
    return torch.where(last >= 0, levels, 0.0).to(torch.int64)


def _bin_count_levels(
    x: torch.Tensor, px: RoiPixels, vmin: torch.Tensor, vmax: torch.Tensor, count: int
) -> torch.Tensor:
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
    rows = px.packed(x.double(), 0.0)  # (B, n_max): every ROI's pixels in one row, for searchsorted
    found = torch.searchsorted(edges.double().contiguous(), rows, right=True)
    return found.reshape(-1).index_select(0, px.slot)


def bin_pixels(
    values: torch.Tensor, pixels: RoiPixels, *, bin_width: float | None = None, bin_count: int | None = None
) -> torch.Tensor:
    """:func:`discretise` on the ROI pixels only: ``(N,)`` levels ``1..`` of ``values`` ``(N,)`` (the
    pixels of :class:`RoiPixels` ``pixels``, ROI by ROI); what :func:`discretise` gathers and scatters.

    Example:
        >>> m = torch.tensor([[[True, True, True], [False, True, True]]])
        >>> px = RoiPixels.from_mask(m)
        >>> img = torch.tensor([[[54.0, 80.0, 166.0], [7.0, 125.0, 150.0]]])
        >>> bin_pixels(px.values(img), px, bin_width=25).tolist()
        [1, 2, 5, 4, 5]
    """
    _check_bins(bin_width, bin_count)
    x = values.to(torch.float32)
    vmin = pixels.reduce(x, "min", 0.0)  # an empty ROI gets 0: finite, and it has no pixel to bin
    vmax = pixels.reduce(x, "max", 0.0)
    if bin_count is not None:
        return _bin_count_levels(x, pixels, vmin, vmax, int(bin_count))
    return _bin_width_levels(x, pixels, vmin, vmax, float(bin_width))  # type: ignore[arg-type]


def _check_bins(bin_width: float | None, bin_count: int | None) -> None:
    if (bin_width is None) == (bin_count is None):
        raise InputError(
            "discretise", "exactly one of bin_width and bin_count", f"bin_width={bin_width}, bin_count={bin_count}"
        )
    if bin_width is not None and not bin_width > 0:
        raise InputError("bin_width", "a positive bin width", str(bin_width))
    if bin_count is not None and (int(bin_count) != bin_count or bin_count < 1):
        raise InputError("bin_count", "a positive whole number of bins", str(bin_count))


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
    _check_bins(bin_width, bin_count)
    pixels = RoiPixels.from_mask(mask)
    levels = bin_pixels(pixels.values(image), pixels, bin_width=bin_width, bin_count=bin_count)
    return pixels.scatter(levels), pixels.reduce(levels, "max", 0)
