"""pyradiomics' derived image types for a batch of 2D frames: Wavelet and LoG (Laplacian of Gaussian).

**What pyradiomics filters.** With usher2's settings (no resampling, ``preCrop`` off)
``featureextractor.execute`` passes the *whole* frame to ``imageoperations.getWaveletImage`` and
``getLoGImage`` and crops each filtered image to the ROI's bounding box only afterwards
(``cropToTumorMask`` with ``padDistance`` 0, since ``kernelRadius`` is 0 outside voxel-based
extraction). A filtered pixel therefore depends on the whole frame and on where the frame ends,
not on the ROI's crop. These functions filter the whole frame the same way and return
``(B, H, W)`` images aligned with the input; features are then computed on the ROI pixels as on
the original image.

**Only the ROI's box.** The engine reads each filtered image only inside the ROI's bounding box.
:func:`wavelet_boxes` and :func:`log_boxes` compute just that, one frame at a time (the work follows
each box's size, not the batch's largest): the wavelet from the box plus the 5-pixel margin its
taps read, wrapped as above (the same arithmetic: equal values); the LoG's first pass over every
row (the second reads whole columns) but only at the box's column blocks, the second on the box's
columns only at its row blocks (see :func:`_line_window`; equal to float64 rounding).

**Ragged batches.** Frames of different sizes share a batch by zero-padding to the right and
bottom: frame ``b`` is ``image[b, :h, :w]`` with ``(h, w) = sizes[b]``. Both filters depend on
where the frame ends (periodic wrap for the wavelet, edge extension for the recursive Gaussian),
so ``sizes`` must be given for a ragged batch; a filtered frame does not depend on the padding or
on the other frames, and is 0 in its padding.

**Wavelet** (``getWaveletImage`` with its defaults: ``coif1``, ``level`` 1, ``start_level`` 0).
pyradiomics pads every odd axis with one wrapped row/column (``numpy.pad(..., 'wrap')``: the
first row/column repeated at the end), runs ``pywt.swtn(data, 'coif1', level=1, axes=(1, 0))``
and crops the padding off. A level-1 stationary transform of an even-length signal is a
circular correlation with the decomposition filters::

    y[n] = sum_k f[k] * x[(n + 3 - k) mod N],  k = 0..5,  f = dec_lo (L) or dec_hi (H)

along each axis (``N``: the padded length). pywt names a band by the filters along
``axes=(1, 0)`` in that order and pyradiomics maps ``a -> L``, ``d -> H``: ``wavelet-LH`` is
low-pass along the columns (array axis 1, x) and high-pass along the rows (axis 0, y).
pywt computes in float32 for a float32 frame; this module in float64, so the two differ by
float32 rounding (about 3e-7 of a band's largest value).

**LoG** (``getLoGImage``: SimpleITK's ``LaplacianRecursiveGaussianImageFilter``,
``NormalizeAcrossScale`` on, sigma in mm). ITK sums, over the two axes, the second-derivative
recursive Gaussian along the axis, then the zero-order recursive Gaussian along the other axis,
divided by the squared spacing of the derivative's axis. Each 1D filter is the Deriche/Young
4th-order IIR filter of ``itk::RecursiveGaussianImageFilter`` (coefficients from ``SetUp``:
``sigma / spacing`` in pixels, the second-derivative filter scaled by ``sigma**2``) applied as
``itk::RecursiveSeparableImageFilter::FilterDataArray`` does: a causal and an anti-causal
recursion, each started as if the edge pixel extended to infinity, summed. ITK keeps its
intermediate images in float32; this module works in float64 (differences of about 1e-7 of the
image's largest value).

*Exact blocked form.* The two recursions are linear, so a filtered line is
``y = T x + x[0] z_c + x[n-1] z_a(from the end)``: ``T`` is the Toeplitz matrix of the two-sided
impulse response (``h_c[i - p]`` for ``i >= p``, ``h_a[p - i]`` otherwise, both computed by the
recursion itself) and ``z_c``, ``z_a`` the responses to ITK's edge starts, again run by the
recursion. Applying ``T`` densely costs ``n`` multiply-adds a pixel; instead the line is cut into
blocks of ``_BLOCK`` pixels. Within a block, the exact diagonal block of ``T`` is one small
matmul. A block ``j >= 1`` blocks away is the rank-4 matrix
``h[j * block + i - p]`` (4 poles: ``h`` is a sum of 4 modes from lag 1 on); all such blocks share
their column and row spaces, whose orthonormal bases ``U``, ``V`` come from an SVD, so that block
``= U C_j V^T`` with ``C_j = U^T H_j V`` (4 x 4). A pixel then costs about ``_BLOCK + 24``
multiply-adds (the near block, 8 projections, the 4 x 4 transfers between blocks, 8 expansions),
every step a batched matmul over all lines, frames, sigmas and both terms (CPU and CUDA alike).
The factors are float64 and orthonormal, so nothing cancels: the result equals the sequential
recursion to float64 rounding: about 1e-15 of the largest LoG value at ``sigma / spacing`` = 1
to 3 pixels; with poles near 1 (30 pixels) rounding grows to about 1e-11, as it does for the
sequential float64 recursion (1e-12 from an 80-bit run there). The
operators depend on ``sigma / spacing``, the order and the number of blocks only, not on a line's
length (a shorter line is zero-padded: the anti-causal part reads zeros past its end and its
edge start is indexed from its own end), so ragged frames share them; they are cached.

pyradiomics skips LoG for a frame smaller than 4 pixels along an axis, and a sigma unless every
axis has at least ``ceil(sigma / spacing) + 1`` pixels. Such a frame's image of that sigma is
NaN here (a warning says which), as pyradiomics computes no features of it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import pywt
import torch

__all__ = ["IMAGE_TYPES", "WAVELET_NAMES", "log", "log_boxes", "log_name", "wavelet", "wavelet_boxes"]

#: pyradiomics' Wavelet image-type names in the order ``getWaveletImage`` yields them.
WAVELET_NAMES: tuple[str, ...] = ("wavelet-LH", "wavelet-HL", "wavelet-HH", "wavelet-LL")

# coif1 decomposition filters (pywt's taps, fixed at import: the transform is defined by them).
_COIF1 = pywt.Wavelet("coif1")
_TAPS = {"L": tuple(_COIF1.dec_lo), "H": tuple(_COIF1.dec_hi)}
_SHIFT = len(_COIF1.dec_lo) // 2  # pywt's swt output n sees x[n + 3 - k]

# Deriche's 4th-order approximation constants (itk::RecursiveGaussianImageFilter::SetUp).
_W1, _L1, _W2, _L2 = 0.6681, -1.3932, 2.0787, -1.3732
_ORDER0 = (1.3530, 1.8151, -0.3531, 0.0902)  # A1, B1, A2, B2 of the Gaussian
_ORDER2 = (-1.3563, 5.2318, 0.3446, -2.2355)  # A1, B1, A2, B2 of its second derivative
_BLOCK = 32  # positions per block of the blocked recursion (see the module docstring)


def log_name(sigma: float) -> str:
    """pyradiomics' image-type name of a LoG sigma (``getLoGImage``; "3D" also in 2D).

    Example:
        >>> log_name(1.0), log_name(2.5)
        ('log-sigma-1-0-mm-3D', 'log-sigma-2-5-mm-3D')
    """
    return "log-sigma-%s-mm-3D" % str(sigma).replace(".", "-")  # noqa: UP031 - pyradiomics' own format


#: Every image type usher2's default parameters derive: Wavelet, then LoG with sigma 1, 2, 3.
IMAGE_TYPES: tuple[str, ...] = (*WAVELET_NAMES, *(log_name(s) for s in (1.0, 2.0, 3.0)))


def _check(image: torch.Tensor, mask: torch.Tensor, sizes: torch.Tensor | None) -> torch.Tensor:
    """The checked ``(B, 2)`` int64 frame sizes (the whole ``(H, W)`` when ``sizes`` is None)."""
    if image.ndim != 3:
        raise ValueError(f"image must be (B, H, W), got shape {tuple(image.shape)}")
    if mask.shape != image.shape:
        raise ValueError(f"image and mask shapes differ: {tuple(image.shape)} vs {tuple(mask.shape)}")
    b, h, w = image.shape
    if sizes is None:
        return torch.tensor([[h, w]], dtype=torch.int64, device=image.device).expand(b, 2)
    sizes = torch.as_tensor(sizes, dtype=torch.int64, device=image.device)
    if sizes.shape != (b, 2):
        raise ValueError(f"sizes must be (B, 2) = ({b}, 2) frame heights and widths, got shape {tuple(sizes.shape)}")
    if bool((sizes < 1).any()) or bool((sizes[:, 0] > h).any()) or bool((sizes[:, 1] > w).any()):
        raise ValueError(f"sizes must lie in [1, ({h}, {w})] (the padded batch), got {sizes.tolist()}")
    return sizes


def _inside(sizes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(B, H, W)`` bool: the pixels of each frame (not its padding)."""
    rows = torch.arange(h, device=sizes.device)[None, :, None] < sizes[:, 0, None, None]
    cols = torch.arange(w, device=sizes.device)[None, None, :] < sizes[:, 1, None, None]
    return rows & cols


def _wrap_index(start: torch.Tensor, count: int, n: torch.Tensor) -> torch.Tensor:
    """``(B, count + 5)``: the frame positions (lengths ``n`` ``(B,)``) the transform's outputs
    ``start .. start + count - 1`` ``(B,)`` read, with pyradiomics' wrap padding of an odd length:
    ``ext[j] = x[(start + j - (taps - 1 - _SHIFT)) mod padded]`` so that ``y[i] = sum_k f[k] *
    ext[i + taps - 1 - k]``; positions past a frame point at any valid index (never read for it)."""
    taps = len(_TAPS["L"])
    padded = n + n % 2  # pyradiomics pads an odd axis by one wrapped row/column
    pos = start[:, None] + torch.arange(count + taps - 1, device=n.device) - (taps - 1 - _SHIFT)
    src = pos % padded[:, None]
    src = torch.where(src == n[:, None], 0, src)  # the padded row/column is row/column 0
    return torch.minimum(src, (n - 1)[:, None])


def _swt_taps(ext: torch.Tensor, axis: int, length: int) -> dict[str, torch.Tensor]:
    """Both coif1 bands ``{"L": .., "H": ..}`` of ``length`` outputs along ``axis`` of the extended
    ``ext`` (from :func:`_wrap_index`; the whole-frame and the box paths share it: equal values)."""
    taps = len(_TAPS["L"])
    out = {}
    for band, f in _TAPS.items():
        acc = ext.narrow(axis, taps - 1, length) * f[0]
        for k in range(1, taps):
            acc.add_(ext.narrow(axis, taps - 1 - k, length), alpha=f[k])
        out[band] = acc
    return out


def _swt_axis(x: torch.Tensor, n: torch.Tensor, axis: int) -> dict[str, torch.Tensor]:
    """Level-1 coif1 stationary transform of ``x`` ``(B, H, W)`` along ``axis`` (1 or 2), per frame
    of length ``n`` ``(B,)``, with pyradiomics' wrap padding of an odd length; ``{"L": .., "H": ..}``."""
    length = x.shape[axis]
    src = _wrap_index(torch.zeros_like(n), length, n)  # (B, length + 5)
    shape = list(x.shape)
    shape[axis] = src.shape[1]
    index = (src[:, :, None] if axis == 1 else src[:, None, :]).expand(shape)
    return _swt_taps(torch.gather(x, axis, index), axis, length)


def wavelet(
    image: torch.Tensor,
    mask: torch.Tensor,
    *,
    sizes: torch.Tensor | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """pyradiomics' Wavelet images (``coif1``, level 1) of a batch of whole frames.

    Args:
        image: ``(B, H, W)`` float grey levels, the whole frames (not cropped to the ROI).
        mask: ``(B, H, W)`` bool ROI masks (checked for shape; the filter does not use them).
        sizes: ``(B, 2)`` each frame's ``(h, w)`` within the zero-padded batch (top-left
            corner); None: every frame fills ``(H, W)``.
        names: Compute only these of :data:`WAVELET_NAMES`; None: all four.

    Returns:
        ``{name: (B, H, W) float64}`` in :data:`WAVELET_NAMES` order; 0 in a frame's padding.

    Raises:
        ValueError: Shapes that do not match, sizes outside the batch, or an unknown name.

    Example:
        >>> img = torch.arange(48.0).reshape(1, 6, 8)
        >>> out = wavelet(img, torch.ones(1, 6, 8, dtype=torch.bool))
        >>> list(out)
        ['wavelet-LH', 'wavelet-HL', 'wavelet-HH', 'wavelet-LL']
        >>> round(out["wavelet-LL"].mean().item() / img.mean().item(), 6)  # sum(dec_lo)**2 = 2
        2.0
    """
    sizes = _check(image, mask, sizes)
    wanted = _wavelet_names(names)
    x = image.to(torch.float64)
    inside = _inside(sizes, *x.shape[1:])
    x = torch.where(inside, x, 0.0)
    along_x = _swt_axis(x, sizes[:, 1], 2)  # pywt's first axis (axes=(1, 0)): the columns
    # each band along x feeds both bands along y: one transform along y per band along x
    along_y = {bx: _swt_axis(along_x[bx], sizes[:, 0], 1) for bx in sorted({name[-2] for name in wanted})}
    return {name: torch.where(inside, along_y[name[-2]][name[-1]], 0.0) for name in WAVELET_NAMES if name in wanted}


def _wavelet_names(names: Sequence[str] | None) -> tuple[str, ...]:
    wanted = WAVELET_NAMES if names is None else tuple(names)
    unknown = sorted(set(wanted) - set(WAVELET_NAMES))
    if unknown:
        raise ValueError(f"unknown wavelet image types {unknown}; available: {list(WAVELET_NAMES)}")
    return tuple(name for name in WAVELET_NAMES if name in wanted)


def _check_boxes(image: torch.Tensor, sizes: torch.Tensor, boxes: torch.Tensor) -> list[list[int]]:
    """The ``(B, 4)`` boxes as lists, checked to lie in their frames and to be non-empty."""
    sizes = _check(image, torch.empty_like(image, dtype=torch.bool), sizes)
    if boxes.shape != (image.shape[0], 4):
        raise ValueError(f"boxes must be (B, 4) = ({image.shape[0]}, 4) (y0, y1, x0, x1), got {tuple(boxes.shape)}")
    out = boxes.tolist()
    for (y0, y1, x0, x1), (h, w) in zip(out, sizes.tolist(), strict=True):
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise ValueError(f"boxes must be non-empty and lie in their frames (sizes {sizes.tolist()}), got {out}")
    return out


def wavelet_boxes(
    image: torch.Tensor, sizes: torch.Tensor, boxes: torch.Tensor, *, names: Sequence[str] | None = None
) -> dict[str, list[torch.Tensor]]:
    """:func:`wavelet` of whole frames, computed only on each frame's box (the ROI's bounding box).

    A level-1 coif1 output reads 6 input pixels per axis, so a box needs only itself plus a margin
    of the frame, taken with pyradiomics' wrap (an odd axis padded with its first row/column) as
    the whole-frame transform takes it; the same arithmetic (:func:`_swt_taps`), so the values equal
    ``wavelet(...)[name][b, y0:y1, x0:x1]``. One small transform per frame: the work follows the
    boxes' areas, not the largest box's.

    Args:
        image: ``(B, H, W)`` float grey levels, the whole frames zero-padded top-left.
        sizes: ``(B, 2)`` each frame's ``(h, w)``.
        boxes: ``(B, 4)`` int64 ``(y0, y1, x0, x1)`` half-open, non-empty, inside each frame
            (:func:`~usher2.features.torchrad.discretise.crop_boxes`).
        names: Compute only these of :data:`WAVELET_NAMES`; None: all four.

    Returns:
        ``{name: [(y1 - y0, x1 - x0) float64 per frame]}`` in :data:`WAVELET_NAMES` order.

    Example:
        >>> img = torch.rand(1, 9, 12, dtype=torch.float64)
        >>> full = wavelet(img, torch.ones(1, 9, 12, dtype=torch.bool), sizes=torch.tensor([[9, 11]]))
        >>> box = wavelet_boxes(img, torch.tensor([[9, 11]]), torch.tensor([[2, 7, 0, 11]]))
        >>> bool(torch.allclose(box["wavelet-HL"][0], full["wavelet-HL"][0, 2:7, 0:11], rtol=1e-14, atol=0))
        True
    """
    wanted = _wavelet_names(names)
    listed = _check_boxes(image, sizes, boxes)
    sizes = torch.as_tensor(sizes, dtype=torch.int64, device=image.device)
    boxes = torch.as_tensor(boxes, dtype=torch.int64, device=image.device)
    x = image.to(torch.float64)
    rows = _wrap_index(boxes[:, 0], int((boxes[:, 1] - boxes[:, 0]).max()), sizes[:, 0])
    cols = _wrap_index(boxes[:, 2], int((boxes[:, 3] - boxes[:, 2]).max()), sizes[:, 1])
    out: dict[str, list[torch.Tensor]] = {name: [] for name in wanted}
    margin = len(_TAPS["L"]) - 1
    for b, (y0, y1, x0, x1) in enumerate(listed):
        crop = x[b].index_select(0, rows[b, : y1 - y0 + margin]).index_select(1, cols[b, : x1 - x0 + margin])
        along_x = _swt_taps(crop, 1, x1 - x0)  # pywt's first axis (axes=(1, 0)): the columns
        along_y = {bx: _swt_taps(along_x[bx], 0, y1 - y0) for bx in sorted({name[-2] for name in wanted})}
        for name in wanted:
            out[name].append(along_y[name[-2]][name[-1]])
    return out


def _n_coefficients(sd: torch.Tensor, a1: float, b1: float, a2: float, b2: float) -> tuple[torch.Tensor, ...]:
    """ITK's ``ComputeNCoefficients``: ``N0..N3`` and their sums ``SN, DN, EN``."""
    s1, s2 = torch.sin(_W1 / sd), torch.sin(_W2 / sd)
    c1, c2 = torch.cos(_W1 / sd), torch.cos(_W2 / sd)
    e1, e2 = torch.exp(_L1 / sd), torch.exp(_L2 / sd)
    n0 = torch.full_like(sd, a1 + a2)
    n1 = e2 * (b2 * s2 - (a2 + 2 * a1) * c2) + e1 * (b1 * s1 - (a1 + 2 * a2) * c1)
    n2 = 2 * e1 * e2 * ((a1 + a2) * c2 * c1 - (b1 * c2 * s1 + b2 * c1 * s2)) + a2 * e1 * e1 + a1 * e2 * e2
    n3 = e2 * e1 * e1 * (b2 * s2 - a2 * c2) + e1 * e2 * e2 * (b1 * s1 - a1 * c1)
    return n0, n1, n2, n3, n0 + n1 + n2 + n3, n1 + 2 * n2 + 3 * n3, n1 + 4 * n2 + 9 * n3


def _deriche(sigma: torch.Tensor, spacing: torch.Tensor, order: int) -> dict[str, torch.Tensor]:
    """``itk::RecursiveGaussianImageFilter::SetUp`` (``NormalizeAcrossScale`` on) for ``order`` 0 or 2.

    Returns ``{"N": (..., 4), "D": (..., 4), "M": (..., 4), "SN_SD": (...), "SM_SD": (...)}``,
    broadcast over ``sigma`` and ``spacing``: the causal (N) and anti-causal (M) numerators, the
    shared denominator (D) and the steady-state gains the edge-extension start uses.
    """
    sd = sigma / spacing
    c1, c2 = torch.cos(_W1 / sd), torch.cos(_W2 / sd)
    e1, e2 = torch.exp(_L1 / sd), torch.exp(_L2 / sd)
    d4 = e1 * e1 * e2 * e2
    d3 = -2 * c1 * e1 * e2 * e2 - 2 * c2 * e2 * e1 * e1
    d2 = 4 * c2 * c1 * e1 * e2 + e1 * e1 + e2 * e2
    d1 = -2 * (e2 * c2 + e1 * c1)
    s_d = 1.0 + d1 + d2 + d3 + d4
    d_d = d1 + 2 * d2 + 3 * d3 + 4 * d4
    e_d = d1 + 4 * d2 + 9 * d3 + 16 * d4
    if order == 0:
        *n, s_n, _, _ = _n_coefficients(sd, *_ORDER0)
        scale = 1.0 / (2 * s_n / s_d - n[0])
    else:
        *n0, s_n0, d_n0, e_n0 = _n_coefficients(sd, *_ORDER0)
        *n2, s_n2, d_n2, e_n2 = _n_coefficients(sd, *_ORDER2)
        beta = -(2 * s_n2 - s_d * n2[0]) / (2 * s_n0 - s_d * n0[0])
        n = [p + beta * q for p, q in zip(n2, n0, strict=True)]
        s_n, d_n, e_n = s_n2 + beta * s_n0, d_n2 + beta * d_n0, e_n2 + beta * e_n0
        alpha2 = (e_n * s_d * s_d - e_d * s_n * s_d - 2 * d_n * d_d * s_d + 2 * d_d * d_d * s_n) / s_d**3
        scale = sigma**2 / alpha2
    n = [c * scale for c in n]
    d = [d1, d2, d3, d4]
    m = [n[1] - d1 * n[0], n[2] - d2 * n[0], n[3] - d3 * n[0], -d4 * n[0]]  # symmetric orders 0 and 2
    return {
        "N": torch.stack(n, -1),
        "D": torch.stack(d, -1),
        "M": torch.stack(m, -1),
        "SN_SD": sum(n) / s_d,
        "SM_SD": sum(m) / s_d,
    }


def _responses(
    taps: Sequence[float], den: Sequence[float], gain: float, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Impulse response ``h`` and edge response ``z`` ``(length,)`` of ``y[i] = sum_k taps[k] x[i - k]
    - sum_j den[j - 1] y[i - j]``: ``h`` from zero history, ``z`` with zero input from position 0 on
    and ITK's start (inputs before 0 equal to 1, outputs before 0 equal to ``gain``)."""
    h: list[float] = []
    z: list[float] = []
    for i in range(length):
        acc_h = taps[i] if i < len(taps) else 0.0
        acc_z = sum(taps[k] for k in range(i + 1, len(taps)))
        for j in range(1, 5):
            acc_h -= den[j - 1] * (h[i - j] if i >= j else 0.0)
            acc_z -= den[j - 1] * (z[i - j] if i >= j else gain)
        h.append(acc_h)
        z.append(acc_z)
    return torch.tensor(h, dtype=torch.float64), torch.tensor(z, dtype=torch.float64)


def _far_factors(h: torch.Tensor, block: int, n_blocks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U``, ``V`` ``(block, 4)`` orthonormal and ``C_j`` ``(n_blocks, 4, 4)`` (``C_0 = 0``) with
    ``h[j * block + i - p] = (U C_j V^T)[i, p]`` for ``j >= 1`` and ``i, p < block``: a response
    that is a sum of 4 decaying modes has rank-4 far blocks, factored through the bases of their
    common column and row spaces (from an SVD: orthonormal, so no cancellation)."""
    span = torch.arange(block)
    far = h[torch.arange(1, n_blocks)[:, None, None] * block + span[:, None] - span[None, :]]
    u = torch.zeros(block, 4, dtype=torch.float64)
    v = torch.zeros(block, 4, dtype=torch.float64)
    if n_blocks > 1:
        u = torch.linalg.svd(far.permute(1, 0, 2).reshape(block, -1), full_matrices=False)[0][:, :4]
        v = torch.linalg.svd(far.reshape(-1, block), full_matrices=False)[2][:4].T
    return u, v, torch.cat([torch.zeros(1, 4, 4, dtype=torch.float64), u.T @ far @ v])


@functools.lru_cache(maxsize=256)
def _line_operators(sigma: float, spacing: float, order: int, block: int, n_blocks: int) -> tuple[torch.Tensor, ...]:
    """The blocked form (see the module docstring) of one 1D recursive Gaussian (``order`` 0 or 2)
    on lines of up to ``block * n_blocks`` pixels, both passes: ``(T0, P, M_c, M_a, E, z_c, z_a)``.
    Cached: a batch reuses them for every frame, sigma and call.

    ``T0`` ``(block, block)``: the diagonal block of ``T``, transposed (a block of inputs as a row
    times it gives its outputs); ``P`` ``(block, 8)``: the projections ``V_c``, ``U_a`` of a block
    onto what reaches later (causal) and earlier (anti-causal) blocks; ``M_c``, ``M_a``
    ``(4 n_blocks, 4 n_blocks)``: how those projections reach each block; ``E`` ``(block, 8)``:
    ``U_c``, ``V_a`` from there to pixels; ``z_c``, ``z_a`` ``(block * n_blocks,)``: the responses
    to the edge starts per unit edge pixel, from the edge inward.
    """
    coef = _deriche(torch.tensor(sigma, dtype=torch.float64), torch.tensor(spacing, dtype=torch.float64), order)
    d = coef["D"].tolist()
    # causal: N_k x[i - k]; anti-causal on the reversed line: M_(k+1) rev[i - 1 - k]
    h_c, z_c = _responses(coef["N"].tolist(), d, float(coef["SN_SD"]), block * (n_blocks + 1))
    h_a, z_a = _responses([0.0, *coef["M"].tolist()], d, float(coef["SM_SD"]), block * (n_blocks + 1))
    u_c, v_c, c_c = _far_factors(h_c, block, n_blocks)
    u_a, v_a, c_a = _far_factors(h_a, block, n_blocks)
    span = torch.arange(block)
    lag = span[:, None] - span[None, :]  # (i, p): output i, input p of one block
    near = torch.where(lag >= 0, h_c[lag.clamp(min=0)], h_a[(-lag).clamp(min=0)])
    lag = torch.arange(n_blocks)[:, None] - torch.arange(n_blocks)[None, :]  # (I, k): blocks
    m_c = c_c[lag.clamp(min=0)]  # C_(I - k), zero unless I > k
    m_a = c_a[(-lag).clamp(min=0)].transpose(2, 3)  # C_(k - I)^T, zero unless k > I
    return (
        near.T,
        torch.cat([v_c, u_a], 1),
        m_c.permute(0, 2, 1, 3).reshape(4 * n_blocks, 4 * n_blocks),
        m_a.permute(0, 2, 1, 3).reshape(4 * n_blocks, 4 * n_blocks),
        torch.cat([u_c, v_a], 1),
        z_c[: block * n_blocks],
        z_a[: block * n_blocks],
    )


def _recursive_lines(
    x: torch.Tensor, lengths: torch.Tensor, ops: list[tuple[torch.Tensor, ...]], axis: int
) -> torch.Tensor:
    """``FilterDataArray`` (causal plus anti-causal pass) along ``axis`` of ``x`` for ``G`` filters
    ``ops`` (from :func:`_line_operators`).

    ``x`` is ``(G or 1, B, R, n)`` (``axis`` -1: along the rows) or ``(G or 1, B, n, R)`` (``axis``
    -2: along the columns); with 1 in front it is shared by all filters. Frame ``b``'s lines have
    ``lengths[b]`` pixels and zeros after them. Returns ``(G, ...)`` the shape of ``x``; positions
    past a line's length are unspecified. Both layouts multiply in place (no transposed copies).
    """
    near_t, proj_t, m_c, m_a, e, z_c, z_a = (torch.stack([o[k] for o in ops]).to(x.device) for k in range(7))
    g, block = near_t.shape[0], near_t.shape[1]
    n_blocks = m_c.shape[-1] // 4
    xs, b, n = x.shape[0], x.shape[1], x.shape[axis]
    full = n_blocks * block
    pad = torch.nn.functional.pad(x, (0, full - n) if axis == -1 else (0, 0, 0, full - n))
    if axis == -1:  # blocks are rows of a matrix: (lines * n_blocks, block) @ (block, block)
        blocks = pad.reshape(xs, -1, block).expand(g, -1, -1)
        proj = torch.bmm(blocks, proj_t).view(g, -1, n_blocks, 2, 4).transpose(2, 3).reshape(g, -1, 2, 4 * n_blocks)
        state = torch.stack(
            [torch.bmm(proj[:, :, 0], m_c.transpose(1, 2)), torch.bmm(proj[:, :, 1], m_a.transpose(1, 2))]
        )
        state = state.view(2, g, -1, n_blocks, 4).permute(1, 2, 3, 0, 4).reshape(g, -1, 8)
        out = torch.bmm(blocks, near_t).baddbmm_(state, e.transpose(1, 2)).view(g, b, -1, full)[..., :n]
        first, out_t, x_t = x[..., :1], out, x
    else:  # blocks are column blocks: (block, block) @ (block, R), batched over frames and blocks
        blocks = pad.reshape(xs, b, n_blocks, block, -1)
        proj = torch.matmul(proj_t.transpose(1, 2)[:, None, None], blocks)  # (G, B, n_blocks, 8, R)
        proj = proj.view(g, b, n_blocks, 2, 4, -1).transpose(2, 3).reshape(g, b, 2, 4 * n_blocks, -1)
        state = torch.stack([m_c[:, None] @ proj[:, :, 0], m_a[:, None] @ proj[:, :, 1]])  # (2, G, B, 4 nb, R)
        state = state.view(2, g, b, n_blocks, 4, -1).permute(1, 2, 3, 0, 4, 5).reshape(g * b * n_blocks, 8, -1)
        out = torch.matmul(near_t.transpose(1, 2)[:, None, None], blocks)  # (G, B, n_blocks, block, R)
        e_all = e[:, None].expand(g, b * n_blocks, block, 8).reshape(g * b * n_blocks, block, 8)
        out.view(g * b * n_blocks, block, -1).baddbmm_(e_all, state)
        out = out.view(g, b, full, -1)[:, :, :n]
        first, out_t, x_t = x[..., :1, :].transpose(-1, -2), out.transpose(-1, -2), x.transpose(-1, -2)
    # the edge starts: each line's first pixel times z_c from the start, its last times z_a from its end
    back = lengths[:, None] - 1 - torch.arange(n, device=x.device)  # (B, n)
    z_end = torch.where(back >= 0, z_a[:, back.clamp(min=0)], 0.0)  # (G, B, n)
    last = torch.gather(x_t, -1, (lengths - 1).view(1, b, 1, 1).expand(*x_t.shape[:-1], 1))
    out_t.addcmul_(first, z_c[:, None, None, :n]).addcmul_(last, z_end[:, :, None])
    return out


def _log_frames(
    x: torch.Tensor, sizes: torch.Tensor, sigmas: list[float], spacing: tuple[float, float]
) -> torch.Tensor:
    """The LoG images ``(B, S, H, W)`` of frames ``x`` ``(B, H, W)`` (0 in their padding) that share
    one ``spacing`` (row, column) in mm."""
    b, h, w = x.shape
    row_mm, col_mm = spacing
    # x's term: the second derivative along the columns (axis 2, ITK's x), then the Gaussian along
    # the rows; y's term: the Gaussian, then the second derivative. The two 1D filters of a term
    # act along different axes and commute, as in ITK's mini-pipeline.
    cols = [_line_operators(s, col_mm, order, _BLOCK, -(-w // _BLOCK)) for s in sigmas for order in (2, 0)]
    rows = [_line_operators(s, row_mm, order, _BLOCK, -(-h // _BLOCK)) for s in sigmas for order in (0, 2)]
    step1 = _recursive_lines(x[None], sizes[:, 1], cols, -1)  # (2S, B, H, W)
    step2 = _recursive_lines(step1, sizes[:, 0], rows, -2).view(len(sigmas), 2, b, h, w)
    return (step2[:, 0] / col_mm**2 + step2[:, 1] / row_mm**2).transpose(0, 1)


def log(
    image: torch.Tensor,
    mask: torch.Tensor,
    sigmas: Sequence[float] = (1.0, 2.0, 3.0),
    spacing: Sequence[float] | torch.Tensor | None = None,
    *,
    sizes: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """pyradiomics' LoG images (SimpleITK's recursive Gaussian, sigma in mm) of a batch of whole frames.

    Args:
        image: ``(B, H, W)`` float grey levels, the whole frames (not cropped to the ROI).
        mask: ``(B, H, W)`` bool ROI masks (checked for shape; the filter does not use them).
        sigmas: Gaussian widths in mm (each > 0).
        spacing: Pixel size in mm per array axis ``(row, column)``, one pair for the batch or a
            ``(B, 2)`` tensor; None: 1 mm.
        sizes: ``(B, 2)`` each frame's ``(h, w)`` within the zero-padded batch (top-left
            corner); None: every frame fills ``(H, W)``.

    Returns:
        ``{log_name(sigma): (B, H, W) float64}``; 0 in a frame's padding, NaN over a frame
        pyradiomics skips for that sigma (too small; see the module docstring). A sigma skipped
        for every frame has no entry.

    Raises:
        ValueError: Shapes that do not match, sizes outside the batch, a sigma <= 0 or a
            spacing <= 0.

    Example:
        >>> img = torch.full((1, 16, 16), 7.0)
        >>> out = log(img, torch.ones(1, 16, 16, dtype=torch.bool), sigmas=[1.0])
        >>> list(out), round(out["log-sigma-1-0-mm-3D"].abs().max().item(), 9)  # flat: no curvature
        (['log-sigma-1-0-mm-3D'], 0.0)
    """
    sizes = _check(image, mask, sizes)
    b, h, w = image.shape
    dev = image.device
    sp, sig, ok = _log_setup(sizes, sigmas, spacing)
    inside = _inside(sizes, h, w)
    x = torch.where(inside, image.to(torch.float64), 0.0)
    sigma_list = [float(s) for s in sigmas]
    spacings, group = torch.unique(sp, dim=0, return_inverse=True)
    if len(spacings) == 1:
        result = _log_frames(x, sizes, sigma_list, tuple(spacings[0].tolist()))
    else:  # the filters depend on the spacing: one pass per distinct spacing
        result = torch.empty(b, len(sigmas), h, w, dtype=torch.float64, device=dev)
        for k, pair in enumerate(spacings.tolist()):
            frames = (group == k).nonzero().squeeze(1)
            result[frames] = _log_frames(x[frames], sizes[frames], sigma_list, tuple(pair))
    result = torch.where(inside[:, None], result, 0.0)
    result = torch.where(ok[:, :, None, None], result, torch.nan)
    _warn_skipped(ok, sig)
    return {log_name(s): result[:, j] for j, s in enumerate(sigmas) if bool(ok[:, j].any())}


def _log_setup(
    sizes: torch.Tensor, sigmas: Sequence[float], spacing: Sequence[float] | torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The checked ``(B, 2)`` spacings, the ``(S,)`` sigmas and ``(B, S)`` whether pyradiomics
    computes each frame's sigma (``getLoGImage``: no LoG below 4 pixels; a sigma needs
    ``size >= ceil(sigma / spacing) + 1`` on each axis)."""
    b, dev = sizes.shape[0], sizes.device
    if not len(sigmas) or any(not s > 0 for s in sigmas):
        raise ValueError(f"sigmas must be > 0, got {list(sigmas)}")
    sp = torch.ones(2, dtype=torch.float64, device=dev) if spacing is None else spacing
    sp = torch.as_tensor(sp, dtype=torch.float64, device=dev).expand(b, 2)
    if not bool((sp > 0).all()) or not bool(torch.isfinite(sp).all()):
        raise ValueError(f"spacing must be positive per array axis (row, column), got {sp.tolist()}")
    sig = torch.tensor([float(s) for s in sigmas], dtype=torch.float64, device=dev)
    need = torch.ceil(sig[None, :, None] / sp[:, None, :]) + 1  # (B, S, 2)
    ok = (sizes[:, None, :] >= need).all(-1) & (sizes.min(-1).values >= 4)[:, None]  # (B, S)
    return sp, sig, ok


def _warn_skipped(ok: torch.Tensor, sig: torch.Tensor) -> None:
    skipped = (~ok).nonzero().tolist()
    if skipped:
        warnings.warn(
            f"LoG skipped (NaN) as pyradiomics does, the frame too small for the sigma: (frame, sigma) "
            f"{[(i, float(sig[j])) for i, j in skipped]}",
            stacklevel=3,
        )


def _line_window(x: torch.Tensor, n: int, ops: list[tuple[torch.Tensor, ...]], k0: int, k1: int) -> torch.Tensor:
    """``FilterDataArray`` of ``G`` filters ``ops`` on lines ``x`` ``(G or 1, L, n)`` (1 in front:
    shared by all filters), only at the output blocks ``k0 .. k1 - 1``: ``(G, L, (k1 - k0) * block)``
    for positions ``k0 * block ..`` (past ``n``: unspecified). Every block's projections still reach
    the kept blocks (8 multiply-adds a pixel), but the near blocks and the expansions (about
    ``block + 8`` a pixel) run on the kept blocks only; the same factors as :func:`_recursive_lines`."""
    near_t, proj_t, m_c, m_a, e, z_c, z_a = (torch.stack([o[k] for o in ops]).to(x.device) for k in range(7))
    g, block = near_t.shape[0], near_t.shape[1]
    n_blocks, kept = m_c.shape[-1] // 4, k1 - k0
    xs, lines = x.shape[0], x.shape[1]
    pad = torch.nn.functional.pad(x, (0, n_blocks * block - n))
    proj = torch.matmul(pad.reshape(xs, lines * n_blocks, block), proj_t)  # (G, L * n_blocks, 8)
    proj = proj.view(g, lines, n_blocks, 2, 4).transpose(2, 3).reshape(g, lines, 2, 4 * n_blocks)
    state = torch.stack(
        [
            proj[:, :, 0] @ m_c[:, 4 * k0 : 4 * k1].transpose(1, 2),
            proj[:, :, 1] @ m_a[:, 4 * k0 : 4 * k1].transpose(1, 2),
        ],
        2,
    )  # (G, L, 2, 4 kept)
    state = state.view(g, lines, 2, kept, 4).permute(0, 1, 3, 2, 4).reshape(g, lines * kept, 8)
    near = pad.reshape(xs, lines, n_blocks, block)[:, :, k0:k1].reshape(xs, lines * kept, block)
    out = torch.matmul(near, near_t).baddbmm_(state, e.transpose(1, 2)).view(g, lines, kept * block)
    # the edge starts: the first pixel times z_c from the start, the last times z_a from the end
    pos = torch.arange(k0 * block, k1 * block, device=x.device)
    z_end = torch.where(pos < n, z_a[:, (n - 1 - pos).clamp(min=0)], 0.0)  # (G, kept * block)
    return out.addcmul_(x[..., :1], z_c[:, None, k0 * block : k1 * block]).addcmul_(x[..., n - 1 : n], z_end[:, None])


def _log_box(x: torch.Tensor, box: list[int], sigmas: list[float], spacing: tuple[float, float]) -> torch.Tensor:
    """The LoG images ``(S, y1 - y0, x1 - x0)`` of one frame ``x`` ``(h, w)`` on its box
    ``(y0, y1, x0, x1)``: the first pass (along the rows) over every row, as the second reads
    whole columns, but only at the box's column blocks; the second (along the columns) on the
    box's columns only, at its row blocks."""
    (h, w), (y0, y1, x0, x1) = x.shape, box
    row_mm, col_mm = spacing
    nbh, nbw = -(-h // _BLOCK), -(-w // _BLOCK)
    cols = [_line_operators(s, col_mm, order, _BLOCK, nbw) for s in sigmas for order in (2, 0)]
    rows = [_line_operators(s, row_mm, order, _BLOCK, nbh) for s in sigmas for order in (0, 2)]
    kx, ky = x0 // _BLOCK, y0 // _BLOCK
    step1 = _line_window(x[None], w, cols, kx, -(-x1 // _BLOCK))[..., x0 - kx * _BLOCK : x1 - kx * _BLOCK]
    step2 = _line_window(step1.transpose(1, 2), h, rows, ky, -(-y1 // _BLOCK))[..., y0 - ky * _BLOCK : y1 - ky * _BLOCK]
    step2 = step2.view(len(sigmas), 2, x1 - x0, y1 - y0)
    return (step2[:, 0] / col_mm**2 + step2[:, 1] / row_mm**2).transpose(1, 2)


def log_boxes(
    image: torch.Tensor,
    sizes: torch.Tensor,
    boxes: torch.Tensor,
    sigmas: Sequence[float] = (1.0, 2.0, 3.0),
    spacing: Sequence[float] | torch.Tensor | None = None,
) -> dict[str, list[torch.Tensor]]:
    """:func:`log` of whole frames, computed only on each frame's box (the ROI's bounding box).

    The recursive Gaussian reaches a whole line, so the first pass still reads every pixel of the
    frame; what the box saves is the rest (see :func:`_log_box`): about half the work of a frame
    whose box covers a fifth of it. One frame at a time (the work follows each box, not the
    largest), all sigmas and both terms in each call. Equal to
    ``log(...)[name][b, y0:y1, x0:x1]`` to float64 rounding (the same factors, other matmul shapes).

    Args:
        image: ``(B, H, W)`` float grey levels, the whole frames zero-padded top-left.
        sizes: ``(B, 2)`` each frame's ``(h, w)``.
        boxes: ``(B, 4)`` int64 ``(y0, y1, x0, x1)`` half-open, non-empty, inside each frame.
        sigmas: Gaussian widths in mm (each > 0).
        spacing: Pixel size in mm ``(row, column)``, one pair or ``(B, 2)``; None: 1 mm.

    Returns:
        ``{log_name(sigma): [(y1 - y0, x1 - x0) float64 per frame]}``; NaN for a frame
        pyradiomics skips for that sigma (as :func:`log`, with its warning).

    Example:
        >>> img = torch.rand(1, 40, 70, dtype=torch.float64)
        >>> full = log(img, torch.ones(1, 40, 70, dtype=torch.bool), sigmas=[2.0])["log-sigma-2-0-mm-3D"]
        >>> box = log_boxes(img, torch.tensor([[40, 70]]), torch.tensor([[5, 30, 33, 69]]), sigmas=[2.0])
        >>> bool(torch.allclose(box["log-sigma-2-0-mm-3D"][0], full[0, 5:30, 33:69], rtol=0, atol=1e-12))
        True
    """
    listed = _check_boxes(image, sizes, boxes)
    sizes = torch.as_tensor(sizes, dtype=torch.int64, device=image.device)
    sp, sig, ok = _log_setup(sizes, sigmas, spacing)
    sigma_list = [float(s) for s in sigmas]
    out: dict[str, list[torch.Tensor]] = {log_name(s): [] for s in sigma_list}
    for b, (box, (h, w), pair, flags) in enumerate(zip(listed, sizes.tolist(), sp.tolist(), ok.tolist(), strict=True)):
        shape = (box[1] - box[0], box[3] - box[2])
        res = _log_box(image[b, :h, :w].to(torch.float64), box, sigma_list, tuple(pair)) if any(flags) else None
        for j, s in enumerate(sigma_list):
            out[log_name(s)].append(res[j] if flags[j] else torch.full(shape, torch.nan, dtype=torch.float64))
    _warn_skipped(ok, sig)
    return out
