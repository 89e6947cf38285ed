"""pyradiomics' derived image types for a batch of 2D frames: Wavelet and LoG (Laplacian of Gaussian).

**What pyradiomics filters.** With usher2's settings (no resampling, ``preCrop`` off)
``featureextractor.execute`` passes the *whole* frame to ``imageoperations.getWaveletImage`` and
``getLoGImage`` and crops each filtered image to the ROI's bounding box only afterwards
(``cropToTumorMask`` with ``padDistance`` 0, since ``kernelRadius`` is 0 outside voxel-based
extraction). A filtered pixel therefore depends on the whole frame and on where the frame ends,
not on the ROI's crop. These functions filter the whole frame the same way and return
``(B, H, W)`` images aligned with the input; features are then computed on the ROI pixels as on
the original image.

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
recursion, each started as if the edge pixel extended to infinity, summed. Here both recursions
run in one loop over the positions along an axis, vectorised over the batch, the sigmas, both
filters and the other axis. ITK keeps its intermediate images in float32; this module works in
float64 (differences of about 1e-7 of the image's largest value).

pyradiomics skips LoG for a frame smaller than 4 pixels along an axis, and a sigma unless every
axis has at least ``ceil(sigma / spacing) + 1`` pixels. Such a frame's image of that sigma is
NaN here (a warning says which), as pyradiomics computes no features of it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pywt
import torch

__all__ = ["IMAGE_TYPES", "WAVELET_NAMES", "log", "log_name", "wavelet"]

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


def _swt_axis(x: torch.Tensor, n: torch.Tensor, axis: int) -> dict[str, torch.Tensor]:
    """Level-1 coif1 stationary transform of ``x`` ``(B, H, W)`` along ``axis`` (1 or 2), per frame
    of length ``n`` ``(B,)``, with pyradiomics' wrap padding of an odd length; ``{"L": .., "H": ..}``."""
    length = x.shape[axis]
    taps = len(_TAPS["L"])
    padded = n + n % 2  # pyradiomics pads an odd axis by one wrapped row/column
    # ext[j] = x[(j - (taps - 1 - _SHIFT)) mod padded], so that y[n] = sum_k f[k] * ext[n + taps - 1 - k]
    pos = torch.arange(length + taps - 1, device=x.device) - (taps - 1 - _SHIFT)
    src = pos[None, :] % padded[:, None]  # (B, length + 5)
    src = torch.where(src == n[:, None], 0, src)  # the padded row/column is row/column 0
    src = torch.minimum(src, (n - 1)[:, None])  # positions past the frame: any valid index
    shape = list(x.shape)
    shape[axis] = src.shape[1]
    index = (src[:, :, None] if axis == 1 else src[:, None, :]).expand(shape)
    ext = torch.gather(x, axis, index)
    out = {}
    for band, f in _TAPS.items():
        acc = ext.narrow(axis, taps - 1, length) * f[0]
        for k in range(1, taps):
            acc.add_(ext.narrow(axis, taps - 1 - k, length), alpha=f[k])
        out[band] = acc
    return out


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
    wanted = WAVELET_NAMES if names is None else tuple(names)
    unknown = sorted(set(wanted) - set(WAVELET_NAMES))
    if unknown:
        raise ValueError(f"unknown wavelet image types {unknown}; available: {list(WAVELET_NAMES)}")
    x = image.to(torch.float64)
    inside = _inside(sizes, *x.shape[1:])
    x = torch.where(inside, x, 0.0)
    along_x = _swt_axis(x, sizes[:, 1], 2)  # pywt's first axis (axes=(1, 0)): the columns
    out: dict[str, torch.Tensor] = {}
    for name in WAVELET_NAMES:
        if name not in wanted:
            continue
        band_x, band_y = name[-2], name[-1]
        y = _swt_axis(along_x[band_x], sizes[:, 0], 1)[band_y]
        out[name] = torch.where(inside, y, 0.0)
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


def _recursive_lines(x: torch.Tensor, n: torch.Tensor, coef: dict[str, torch.Tensor]) -> torch.Tensor:
    """``FilterDataArray`` along the *first* axis of ``x`` ``(L, B, ...)``, line lengths ``n`` ``(B,)``.

    ``coef`` tensors (N, D, M with a trailing 4) broadcast with ``x.shape[1:]``; the result has the
    broadcast shape ``(L, B, ...)``. The anti-causal pass runs on each line reversed within its
    own length, so that both passes of every line start at position 0 and share one loop over
    the positions, with the filtered axis first so that each step reads and writes contiguous
    memory.
    """
    length = x.shape[0]
    trail = (1,) * (x.ndim - 2)
    pos = torch.arange(length, device=x.device)[:, None]
    flip = torch.where(pos < n[None, :], n[None, :] - 1 - pos, pos).view(length, -1, *trail)
    rev = torch.gather(x, 0, flip.expand_as(x))
    shape = torch.broadcast_shapes(x.shape[1:], coef["D"].shape[:-1])
    n_taps = [coef["N"][..., k] for k in range(4)]
    m_taps = [coef["M"][..., k] for k in range(4)]
    d = [coef["D"][..., j] for j in range(4)]
    # Inputs before a line's start equal its first pixel; outputs before it are the steady-state
    # response to that pixel (ITK's boundary coefficients: BN_j * pixel = D_j * (SN / SD) * pixel).
    start_c = (x[0] * coef["SN_SD"]).expand(shape)
    start_a = (rev[0] * coef["SM_SD"]).expand(shape)
    out_c = torch.empty(length, *shape, dtype=x.dtype, device=x.device)
    out_a = torch.empty_like(out_c)
    for i in range(length):
        c, a = out_c[i], out_a[i]
        # causal: N_k * x[i - k]; anti-causal (reversed): M_(k+1) * rev[i - 1 - k]
        torch.mul(n_taps[0], x[i], out=c)
        torch.mul(m_taps[0], rev[max(i - 1, 0)], out=a)
        for k in range(1, 4):
            c.addcmul_(n_taps[k], x[max(i - k, 0)])
            a.addcmul_(m_taps[k], rev[max(i - 1 - k, 0)])
        for j in range(4):
            c.addcmul_(d[j], out_c[i - 1 - j] if i > j else start_c, value=-1.0)
            a.addcmul_(d[j], out_a[i - 1 - j] if i > j else start_a, value=-1.0)
    return out_c.add_(torch.gather(out_a, 0, flip.expand_as(out_a)))


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
    if not len(sigmas) or any(not s > 0 for s in sigmas):
        raise ValueError(f"sigmas must be > 0, got {list(sigmas)}")
    sp = torch.ones(2, dtype=torch.float64, device=dev) if spacing is None else spacing
    sp = torch.as_tensor(sp, dtype=torch.float64, device=dev).expand(b, 2)
    if not bool((sp > 0).all()) or not bool(torch.isfinite(sp).all()):
        raise ValueError(f"spacing must be positive per array axis (row, column), got {sp.tolist()}")
    sig = torch.tensor([float(s) for s in sigmas], dtype=torch.float64, device=dev)
    # getLoGImage: no LoG below 4 pixels; a sigma needs size >= ceil(sigma / spacing) + 1 on each axis
    need = torch.ceil(sig[None, :, None] / sp[:, None, :]) + 1  # (B, S, 2)
    ok = (sizes[:, None, :] >= need).all(-1) & (sizes.min(-1).values >= 4)[:, None]  # (B, S)
    inside = _inside(sizes, h, w)
    x = torch.where(inside, image.to(torch.float64), 0.0)
    # Axis 1 (ITK's x) first: the second derivative (for x's term) and the Gaussian (for y's term);
    # then axis 0: the Gaussian on the first and the second derivative on the second. The two
    # 1D filters of a term act along different axes and commute, as in ITK's mini-pipeline.
    sig_b = sig[None, :]  # (1, S) against the spacings (B, 1)
    cols = [_deriche(sig_b, sp[:, 1, None], order) for order in (2, 0)]
    rows = [_deriche(sig_b, sp[:, 0, None], order) for order in (0, 2)]

    def stacked(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        # (B, S, 2 terms, 1 line) so that they broadcast over (L, B, S, 2, lines)
        return {k: torch.stack([p[k] for p in parts], 2).unsqueeze(3) for k in parts[0]}

    lines = x.permute(2, 0, 1)[:, :, None, None].contiguous()  # (W, B, 1, 1, H)
    step1 = _recursive_lines(lines, sizes[:, 1], stacked(cols))  # along the columns: (W, B, S, 2, H)
    step2 = _recursive_lines(step1.permute(4, 1, 2, 3, 0).contiguous(), sizes[:, 0], stacked(rows))
    step2 = step2.permute(1, 2, 3, 0, 4)  # (B, S, 2, H, W)
    result = step2[:, :, 0] / sp[:, None, 1, None, None] ** 2 + step2[:, :, 1] / sp[:, None, 0, None, None] ** 2
    result = torch.where(inside[:, None], result, 0.0)
    result = torch.where(ok[:, :, None, None], result, torch.nan)
    skipped = (~ok).nonzero().tolist()
    if skipped:
        warnings.warn(
            f"LoG skipped (NaN) as pyradiomics does, the frame too small for the sigma: (frame, sigma) "
            f"{[(i, float(sig[j])) for i, j in skipped]}",
            stacklevel=2,
        )
    return {log_name(s): result[:, j] for j, s in enumerate(sigmas) if bool(ok[:, j].any())}
