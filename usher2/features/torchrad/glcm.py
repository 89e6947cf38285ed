r"""pyradiomics' grey-level co-occurrence matrix (GLCM) features for a batch of 2D ROIs.

Reproduces :class:`radiomics.glcm.RadiomicsGLCM` (pyradiomics-bhklab 3.1.4) with its defaults
``distances=[1]``, ``symmetricalGLCM=True`` and ``weightingNorm=None``: one co-occurrence matrix
per in-plane angle (offsets ``(0, 1)``, ``(1, 1)``, ``(1, 0)``, ``(1, -1)`` in array order),
made symmetric (:math:`P + P^T`), normalised, the features computed per angle and averaged over
the angles whose matrix is not empty (pyradiomics deletes empty angles, then ``nanmean``).

**Grey levels absent from the ROI.** pyradiomics deletes their rows and columns but keeps the
original grey values as ``i``/``j`` (``coefficients['grayLevels']``), and ``Ng`` (in ``Idmn``,
``Idn`` and the ``k`` ranges) is the largest grey level of the ROI, not the number present. Here
every ROI keeps a full ``Ng x Ng`` matrix (``Ng`` the largest level in the batch): an absent
level's row and column are zero, which adds nothing to any sum, so every feature is the same
expression (for ``MCC``, below, a zero row adds an eigenvalue 0, which never exceeds the second
largest).

**Batches, on the ROI pixels.** :func:`compute_pixels` takes the ``(N,)`` levels of a
:class:`~usher2.features.torchrad.discretise.RoiPixels` layout (:func:`compute` gathers them
from ``binned``), whose neighbour pairs (both pixels in the ROI, per offset) are built once per
batch and reused for every image type. The ``B x 4`` matrices are one ``torch.bincount`` over
``((roi * 4 + angle) * Ng + i - 1) * Ng + j - 1`` of all pairs (int32 keys), made symmetric
by adding the transpose. The matrix is symmetric, so ``py = px``, ``uy = ux``, and all but the
whole-matrix features (entropies, energy, Imc, MCC, maximum) are weighted sums over the marginal
``px`` and the sum/difference distributions ``p_{x+y}``, ``p_{x-y}`` (one ``scatter_add``
each): a few batched matrix products with tables of weights over ``(B, 4, Ng, Ng)``, then one
angle mean for all features. No loop over ROIs. Two host syncs: ``Ng`` and, per batch, the pairs.

**MCC** is :math:`\sqrt{\lambda_2(Q)}` with pyradiomics'
:math:`Q_{ij} = \sum_k p_{ik} p_{jk} / (p_x(i) p_y(k) + \epsilon)`. For a symmetric ``P``,
:math:`Q = D^{-1} P D^{-1} P` (``D = diag(px)``, up to the ``eps``) is similar to :math:`S^2`,
:math:`S = D^{-1/2} P D^{-1/2}` symmetric, so its eigenvalues are the squares of ``S``'s and
``MCC`` is the second largest :math:`|\lambda(S)|`: one batched ``eigvalsh`` (real, accurate,
several times faster than the general ``eigvals`` pyradiomics uses). The ``eps`` moves ``Q`` by
a relative ``eps / (p_x(i) p_x(k))`` in the entries of the rarest levels, whose eigenvector
weights are as small: ``MCC`` agrees to ~3e-9 relative on the fixtures, 3e-8 at most on 400
random 2-11 px ROIs with 1-8 grey levels.

**Agreement with pyradiomics** (``tests/features/torchrad/test_glcm.py``): every feature within
1e-6 relative / 1e-9 absolute on the simulated, BUS-BRA and edge-case ROIs and on random tiny
ROIs (``ClusterShade`` near 0 and ``Imc1``/``Imc2`` ~1e-13, ``MCC`` ~1e-9, about 1e-15 for
the rest).

Where pyradiomics has a special case we follow it: ``Correlation`` is 1 on an angle where
:math:`\sigma_x\sigma_y = 0`, ``Imc1`` 0 where :math:`\max(HX, HY) = 0`, ``Imc2`` 0 where
:math:`HXY2 = HXY` and NaN (skipped by the angle mean) where rounding makes :math:`HXY2 < HXY`,
``MCC`` 1 when the ROI has a single grey level.

An eigenvalue :math:`\lambda_2(Q)` near 0 is numerically delicate in pyradiomics (LAPACK returns
about :math:`\pm 10^{-17}`, whose square root is :math:`\sim 10^{-8}` or NaN, then skipped);
here ``S``'s eigenvalue is about :math:`10^{-17}`. The tests found no ROI where this matters, but
a ROI whose :math:`\lambda_2` is 0 on some angle could differ there by ~1e-8 absolute.

Example:
    >>> import torch
    >>> binned = torch.tensor([[[1, 2, 5, 2, 3], [3, 2, 1, 3, 1], [1, 3, 5, 5, 2],
    ...                         [1, 1, 1, 1, 2], [1, 2, 4, 3, 5]]])
    >>> out = compute(binned, names=["Contrast", "JointAverage"])
    >>> sorted(out)
    ['Contrast', 'JointAverage']
    >>> out["Contrast"].shape, out["Contrast"].dtype
    (torch.Size([1]), torch.float64)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from usher2.features.torchrad.discretise import RoiPixels

FEATURES: tuple[str, ...] = (
    "Autocorrelation",
    "JointAverage",
    "ClusterProminence",
    "ClusterShade",
    "ClusterTendency",
    "Contrast",
    "Correlation",
    "DifferenceAverage",
    "DifferenceEntropy",
    "DifferenceVariance",
    "JointEnergy",
    "JointEntropy",
    "Imc1",
    "Imc2",
    "Idm",
    "MCC",
    "Idmn",
    "Id",
    "Idn",
    "InverseVariance",
    "MaximumProbability",
    "SumAverage",
    "SumEntropy",
    "SumSquares",
)

#: The 2D offsets ``(dy, dx)`` at distance 1 (one per angle; symmetry adds the opposite ones).
OFFSETS: tuple[tuple[int, int], ...] = ((0, 1), (1, 1), (1, 0), (1, -1))

#: pyradiomics' ``weightingNorm`` values (``None``: features per angle, then averaged).
WEIGHTING_NORMS: tuple[str, ...] = ("infinity", "euclidean", "manhattan", "no_weighting")

_EPS = 2.220446049250313e-16  # numpy.spacing(1), pyradiomics' eps


def _check(binned: torch.Tensor, names: Sequence[str] | None, weighting_norm: str | None) -> list[str]:
    if binned.ndim != 3:
        raise ValueError(f"binned must be (B, H, W), got shape {tuple(binned.shape)}")
    if binned.dtype.is_floating_point or binned.dtype.is_complex or binned.dtype == torch.bool:
        raise ValueError(f"binned must hold integer grey levels (1..Ng inside the ROI, 0 outside), got {binned.dtype}")
    wanted = list(FEATURES) if names is None else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in FEATURES]
    if unknown:
        raise ValueError(f"unknown GLCM features {unknown}; available: {list(FEATURES)}")
    if weighting_norm is not None and weighting_norm not in WEIGHTING_NORMS:
        raise ValueError(f"weighting_norm must be None or one of {list(WEIGHTING_NORMS)}, got {weighting_norm!r}")
    return wanted


def _counts(levels: torch.Tensor, pixels: RoiPixels, ng: int) -> torch.Tensor:
    """Co-occurrence counts ``(B, 4, Ng, Ng)`` float64 (not yet symmetric) of the ROI pixels'
    ``levels`` ``(N,)``: one ``bincount`` over ``((roi * 4 + angle) * Ng + i - 1) * Ng + j - 1`` of
    every neighbour pair (int32 keys while they fit: half the memory traffic of int64)."""
    src, dst, group = pixels.pairs(OFFSETS)
    size = pixels.shape[0] * len(OFFSETS) * ng * ng
    code = (levels - 1).to(torch.int32 if size < 2**31 else torch.int64)
    key = (code * ng).index_select(0, src)
    key += code.index_select(0, dst)
    key.add_(group, alpha=ng * ng)
    return torch.bincount(key, minlength=size).view(-1, len(OFFSETS), ng, ng).double()


def _matrices(binned: torch.Tensor, ng: int) -> torch.Tensor:
    """Symmetric co-occurrence counts ``(B, 4, Ng, Ng)`` float64 of ``binned`` ``(B, H, W)``, one matrix per offset."""
    pixels = RoiPixels.from_mask(binned > 0)
    counts = _counts(pixels.values(binned.long()), pixels, ng)
    return counts + counts.transpose(-1, -2)


def _angle_weights(weighting_norm: str, spacing: Sequence[float], device: torch.device) -> torch.Tensor:
    """pyradiomics' ``W = exp(-||d||^2)`` per offset, ``d`` in mm (``spacing`` in array order)."""
    out = []
    for dy, dx in OFFSETS:
        d = (abs(dy) * float(spacing[0]), abs(dx) * float(spacing[1]))
        if weighting_norm == "infinity":
            out.append(math.exp(-(max(d) ** 2)))
        elif weighting_norm == "euclidean":
            out.append(math.exp(-(d[0] ** 2 + d[1] ** 2)))
        elif weighting_norm == "manhattan":
            out.append(math.exp(-((d[0] + d[1]) ** 2)))
        else:
            out.append(1.0)
    return torch.tensor(out, dtype=torch.float64, device=device)


def _mcc(p: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Per-angle MCC: the second largest ``|eigenvalue|`` of ``S = D^-1/2 P D^-1/2`` (``D = diag(px)``).

    pyradiomics' ``Q = D^-1 P D^-1 P`` (``P`` symmetric) is similar to ``S^2``, so its eigenvalues
    are the squares of the symmetric ``S``'s (``eigvalsh``: fast, real, accurate) and
    ``sqrt(lambda_2(Q))`` is the second largest ``|lambda(S)|``. A level with an empty row (absent
    from the ROI or without a neighbour on that angle) gives a zero row in both: eigenvalue 0.
    """
    if p.shape[-1] < 2:  # a batch of flat ROIs: one eigenvalue; compute_pixels() sets MCC = 1
        return torch.ones(p.shape[:-2], dtype=p.dtype, device=p.device)
    r = torch.where(px > 0, px.rsqrt(), 0.0)
    s = (p * r.unsqueeze(-1)).mul_(r.unsqueeze(-2))
    return torch.linalg.eigvalsh(s).abs().topk(2, dim=-1).values[..., 1]


def compute(
    binned: torch.Tensor,
    names: Sequence[str] | None = None,
    *,
    weighting_norm: str | None = None,
    spacing: Sequence[float] = (1.0, 1.0),
) -> dict[str, torch.Tensor]:
    """pyradiomics' GLCM features of each ROI of a batch.

    Args:
        binned: ``(B, H, W)`` integer tensor, the discretised grey level 1..Ng inside each ROI and
            0 outside (the ROI is ``binned > 0``), e.g. from ``discretise``. ROIs of different
            sizes are zero-padded to a common ``(H, W)``.
        names: Features to compute (names from :data:`FEATURES`); ``None``: all of them.
        weighting_norm: pyradiomics' ``weightingNorm``: ``None`` (its default: features per angle,
            averaged) or one of :data:`WEIGHTING_NORMS` (the 4 matrices summed with weights
            ``exp(-||d||^2)``, then the features of that one matrix).
        spacing: Pixel size per array axis ``(row, column)``, used only by ``weighting_norm``.

    Returns:
        ``{feature name: (B,) float64 tensor}`` on ``binned``'s device, for ``names`` in order.
        A ROI with no co-occurring pair on any angle (pixels that do not touch) gets NaN, as in
        pyradiomics.

    Raises:
        ValueError: ``binned`` not ``(B, H, W)`` integers, a batch without any ROI pixel, an
            unknown feature name or ``weighting_norm``.

    Example:
        >>> import torch
        >>> binned = torch.zeros(2, 6, 6, dtype=torch.int64)
        >>> binned[0, 1:5, 1:5] = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
        >>> binned[1, :3, :3] = 2  # a flat ROI, smaller than the first (padding)
        >>> out = compute(binned, names=["JointAverage", "Correlation", "MCC"])
        >>> [round(v, 6) for v in out["JointAverage"].tolist()]
        [2.5, 2.0]
        >>> out["Correlation"][1].item(), out["MCC"][1].item()  # pyradiomics' values for a flat ROI
        (1.0, 1.0)
    """
    wanted = _check(binned, names, weighting_norm)
    pixels = RoiPixels.from_mask(binned > 0)
    return compute_pixels(pixels.values(binned.long()), pixels, wanted, weighting_norm=weighting_norm, spacing=spacing)


def compute_pixels(
    levels: torch.Tensor,
    pixels: RoiPixels,
    names: Sequence[str] | None = None,
    *,
    weighting_norm: str | None = None,
    spacing: Sequence[float] = (1.0, 1.0),
) -> dict[str, torch.Tensor]:
    """:func:`compute` on the ROI pixels: ``levels`` ``(N,)`` int64 (1..Ng) in the layout of
    ``pixels`` (what :func:`compute` gathers; the engine passes them directly, and reuses the
    neighbour pairs ``pixels`` caches across image types)."""
    wanted = _check(levels.view(1, 1, -1), names, weighting_norm)
    ng = int(levels.max()) if levels.numel() else 0
    if ng < 1:
        raise ValueError("binned has no ROI pixel (all 0); every ROI needs grey levels 1..Ng inside it")
    counts = _counts(levels, pixels, ng)
    counts = counts + counts.transpose(-1, -2)  # (B, A, Ng, Ng), symmetric
    if weighting_norm is not None:
        weights = _angle_weights(weighting_norm, spacing, levels.device)
        counts = (counts * weights.view(1, -1, 1, 1)).sum(1, keepdim=True)
    total = counts.sum((-1, -2))  # (B, A)
    valid = total > 0
    p = counts.div_(torch.where(valid, total, 1.0)[..., None, None])
    b = pixels.shape[0]
    ng_roi = pixels.reduce(levels, "max", 0).double()  # pyradiomics' Ng: each ROI's largest grey level
    per_angle = _per_angle(p, ng_roi.view(b, 1, 1), set(wanted))
    stacked = torch.stack([per_angle[name] for name in wanted])  # (F, B, A)
    ok = valid & ~torch.isnan(stacked)  # pyradiomics: empty angles deleted, then nanmean
    means = torch.where(ok, stacked, 0.0).sum(-1) / ok.sum(-1)
    out = dict(zip(wanted, means.unbind(0), strict=True))
    if "MCC" in out:  # pyradiomics: a single grey level in the ROI, a single eigenvalue: MCC = 1
        present = torch.bincount(pixels.roi * ng + levels - 1, minlength=b * ng).view(b, ng) > 0
        out["MCC"] = torch.where(present.sum(-1) < 2, 1.0, out["MCC"])
    return out


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum(a * b)`` over the last axis, as a batched matrix product (no ``a * b`` temporary)."""
    return (a.unsqueeze(-2) @ b.unsqueeze(-1))[..., 0, 0]


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """``-sum p log2(p + eps)`` over the last axis (pyradiomics' eps)."""
    return -_dot(p, torch.log2(p + _EPS))


def _per_angle(p: torch.Tensor, ng_roi: torch.Tensor, wanted: set[str]) -> dict[str, torch.Tensor]:
    """The ``wanted`` features of each ROI and angle ``(B, A)`` from ``p`` ``(B, A, Ng, Ng)``.

    ``p`` is symmetric, so ``py = px`` and ``uy = ux`` (pyradiomics' expressions otherwise); every
    feature but those of the whole matrix (entropies, energy, Imc, MCC, maximum) reduces to the
    marginal ``px`` and the sum and difference distributions ``p_{x+y}``, ``p_{x-y}``; the weighted
    sums over those are matrix products with a table of weights per feature.
    """
    ng = p.shape[-1]
    dev, f64 = p.device, torch.float64
    lv = torch.arange(1, ng + 1, device=dev, dtype=f64)
    k_sum = torch.arange(2, 2 * ng + 1, device=dev, dtype=f64)
    k_diff = torch.arange(0, ng, device=dev, dtype=f64)
    p_flat = p.flatten(-2)
    pxaddy, pxsuby = _sum_diff(p_flat, ng)
    px = p.sum(-1)  # (B, A, Ng); py = px (symmetric)
    ux = px @ lv  # (B, A); uy = ux
    dx = lv - ux.unsqueeze(-1)  # (B, A, Ng): i - ux
    out: dict[str, torch.Tensor] = {"JointAverage": ux, "SumSquares": _dot(px, dx * dx)}
    out["Autocorrelation"] = (p @ lv) @ lv
    corm = _dot(dx, (p @ dx.unsqueeze(-1))[..., 0])
    sum_sq = out["SumSquares"]  # sigma_x sigma_y = sigma_x^2
    out["Correlation"] = torch.where(sum_sq == 0, 1.0, corm / (sum_sq + _EPS))
    centred = (k_sum - ux.unsqueeze(-1)) - ux.unsqueeze(-1)  # (i + j) - ux - uy, (B, A, 2Ng - 1)
    powers = torch.stack([centred * centred, centred * centred * centred, (centred * centred).square_()], -1)
    cluster = (pxaddy.unsqueeze(-2) @ powers)[..., 0, :]
    out.update(dict(zip(("ClusterTendency", "ClusterShade", "ClusterProminence"), cluster.unbind(-1), strict=True)))
    inv_sq = torch.cat([k_diff.new_zeros(1), 1 / k_diff[1:] ** 2])  # InverseVariance skips k = 0
    table = torch.stack([k_diff, k_diff**2, 1 / (1 + k_diff**2), 1 / (1 + k_diff), inv_sq], 1)
    names = ("DifferenceAverage", "Contrast", "Idm", "Id", "InverseVariance")
    out.update(dict(zip(names, (pxsuby @ table).unbind(-1), strict=True)))
    per_roi = torch.stack([1 / (1 + k_diff**2 / ng_roi**2), 1 / (1 + k_diff / ng_roi)], -1)  # (B, 1, Ng, 2)
    out["Idmn"], out["Idn"] = (pxsuby.unsqueeze(-2) @ per_roi)[..., 0, :].unbind(-1)
    out["DifferenceEntropy"] = _entropy(pxsuby)
    out["DifferenceVariance"] = _dot(pxsuby, (k_diff - out["DifferenceAverage"].unsqueeze(-1)).square_())
    out["SumAverage"] = pxaddy @ k_sum
    out["SumEntropy"] = _entropy(pxaddy)
    out["JointEnergy"] = _dot(p_flat, p_flat)
    out["MaximumProbability"] = p_flat.amax(-1)
    if wanted & {"JointEntropy", "Imc1", "Imc2"}:
        out.update(_entropies(p_flat, px))
    if "MCC" in wanted:
        out["MCC"] = _mcc(p, px)
    return out


def _sum_diff(p_flat: torch.Tensor, ng: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``p_{x+y}(k)``, ``k = 2..2Ng`` and ``p_{x-y}(k)``, ``k = 0..Ng-1``: ``p`` ``(..., Ng * Ng)``
    summed over its anti-diagonals and (both) diagonals, one ``scatter_add`` each."""
    ii = torch.arange(ng, device=p_flat.device)
    rows = p_flat.shape[:-1]
    add_idx = (ii[:, None] + ii[None, :]).reshape(-1).expand(*rows, ng * ng)
    sub_idx = (ii[:, None] - ii[None, :]).abs_().reshape(-1).expand(*rows, ng * ng)
    pxaddy = p_flat.new_zeros(*rows, 2 * ng - 1).scatter_add_(-1, add_idx, p_flat)
    pxsuby = p_flat.new_zeros(*rows, ng).scatter_add_(-1, sub_idx, p_flat)
    return pxaddy, pxsuby


def _entropies(p_flat: torch.Tensor, px: torch.Tensor) -> dict[str, torch.Tensor]:
    """JointEntropy (``HXY``), Imc1 and Imc2 per ROI and angle, with pyradiomics' special cases."""
    hxy = _entropy(p_flat)
    pxy = (px.unsqueeze(-1) * px.unsqueeze(-2)).flatten(-2)
    log_pxy = torch.log2(pxy + _EPS)
    hxy1 = -_dot(p_flat, log_pxy)
    hxy2 = -_dot(pxy, log_pxy)
    hx = _entropy(px)  # = HY
    imc1 = torch.where(hx != 0, (hxy - hxy1) / torch.where(hx != 0, hx, 1.0), 0.0)
    imc2 = (1 - torch.exp(-2 * (hxy2 - hxy))) ** 0.5  # NaN where rounding gives HXY2 < HXY
    return {"JointEntropy": hxy, "Imc1": imc1, "Imc2": torch.where(hxy2 == hxy, 0.0, imc2)}
