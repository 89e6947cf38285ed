"""pyradiomics' 2D shape features (``radiomics.shape2D``), batched over ROIs.

pyradiomics crops the mask to the ROI's bounding box, pads it with one row/column of background
and runs marching squares in C (``cShape.calculate_coefficients2D``): every 2 x 2 square of
pixels with corners ``p0 p1 / p3 p2`` gets, from a 16-entry table, the line(s) joining the
midpoints of its edges where the mask changes; the mesh is those lines. Then

* **MeshSurface** ``A`` is half the sum of the lines' signed cross products (the shoelace
  formula). The lines are oriented so the signs cancel outside the ROI, which makes ``A`` the
  sum over squares of the part cut off inside: 1/8 of a square for one corner inside, 1/2 for
  two adjacent corners, 1/4 for two opposite corners (the table cuts both corners off), 7/8 for
  three, 1 for four, times ``dy * dx``. That sum is computed here by counting squares per case.
* **Perimeter** ``P`` is the total length of the lines: ``dx`` for a horizontal line (two
  corners on top or at the bottom), ``dy`` for a vertical one, ``sqrt((dy/2)^2 + (dx/2)^2)`` for
  a diagonal (one or three corners inside; two for the opposite-corner squares).
* **MaximumDiameter** is the largest distance between two mesh vertices (edge midpoints). The
  farthest pair of a point set lies on its convex hull, and a hull vertex is the leftmost or
  rightmost vertex of its row *and* the topmost or bottommost of its column, so only those
  candidates (a few hundred per ROI) enter the pairwise distances, with the C code's arithmetic
  on the padded coordinates.
* **PixelSurface** ``N dy dx``; **PerimeterSurfaceRatio** ``P / A``; **Sphericity**
  ``2 sqrt(pi A) / P``.
* **MajorAxisLength**, **MinorAxisLength**, **Elongation**: ``4 sqrt(lambda)`` of the eigenvalues
  of the covariance of the pixel centres (mm), ``sqrt(lambda_minor / lambda_major)``; the 2 x 2
  eigenvalues in closed form. pyradiomics rounds eigenvalues in ``(-1e-10, 0)`` to 0 and gives
  NaN for more negative ones; so does this module.

``SphericalDisproportion`` is deprecated in pyradiomics (off by default) and not computed.

**Batched.** The masks are padded by one background pixel (the mesh does not depend on where
the ROI sits, so no crop: pyradiomics' coordinates differ by whole pixels), the square cases
are one byte per square from shifted views, counted per ROI by one ``bincount``; the diameter
candidates are row/column extremes gathered to a ``(B, K, 2)`` tensor (``K`` the most
candidates of an ROI: a device sync) for one ``(B, K, K)`` distance computation; the moments are
segment sums over the ROI pixels' coordinates (a
:class:`~usher2.features.torchrad.discretise.RoiPixels` layout, which the engine passes). No
Python loop over ROIs.

**Agreement.** With pixel spacings that are powers of two (1 mm, 0.5 mm, 0.25 mm) every mesh
coordinate is exact in float64, so MeshSurface and MaximumDiameter equal pyradiomics' exactly;
the perimeter's summation order differs (~1e-15), the moments' by numpy's ``dot`` and
``eigvals`` (~1e-15). The tests hold 1e-6 relative (``tests/features/torchrad/test_shape2d.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from usher2.features.torchrad.discretise import RoiPixels
from usher2.io.errors import InputError

__all__ = ["FEATURES", "compute"]

FEATURES: tuple[str, ...] = (
    "MeshSurface",
    "PixelSurface",
    "Perimeter",
    "PerimeterSurfaceRatio",
    "Sphericity",
    "MaximumDiameter",
    "MajorAxisLength",
    "MinorAxisLength",
    "Elongation",
)
_MESH = {"MeshSurface", "Perimeter", "PerimeterSurfaceRatio", "Sphericity"}
_MOMENTS = {"MajorAxisLength", "MinorAxisLength", "Elongation"}
# per marching-squares case (bit k set: corner p_k inside; p0 p1 on top, p3 p2 below): the area
# inside in eighths of a square, and the number of diagonal lines; cases 3, 12 have one
# horizontal line, 6, 9 one vertical line
_EIGHTHS = (0, 1, 1, 4, 1, 2, 4, 7, 1, 4, 2, 7, 4, 7, 7, 8)
_DIAGONALS = (0, 1, 1, 0, 1, 2, 0, 1, 1, 0, 2, 1, 0, 1, 1, 0)


def _diameter(p: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Largest distance between marching-squares vertices of padded masks ``p`` (B, h, w), in mm."""
    b, h, w = p.shape
    dev = p.device
    # vertices on a doubled grid: (2y + 1, 2x) between rows y and y + 1; (2y, 2x + 1) between columns x and x + 1
    lattice = torch.zeros(b, 2 * h - 1, 2 * w - 1, dtype=torch.bool, device=dev)
    lattice[:, 1::2, 0::2] = p[:, :-1, :] != p[:, 1:, :]
    lattice[:, 0::2, 1::2] = p[:, :, :-1] != p[:, :, 1:]
    ys = torch.arange(2 * h - 1, device=dev)
    lat = lattice.to(torch.uint8)  # argmax gives the first maximum: the first vertex of a row / column
    row_lo = lat.argmax(2)  # (B, 2h - 1); 0 for an empty row, which ``has`` drops
    row_hi = 2 * w - 2 - lat.flip(2).argmax(2)
    col_lo = lat.argmax(1)  # (B, 2w - 1)
    col_hi = 2 * h - 2 - lat.flip(1).argmax(1)
    row_has = lattice.any(2)
    cand_y = torch.cat([ys, ys])[None].expand(b, -1)  # (B, S): each row's leftmost, then rightmost vertex
    cand_x = torch.cat([row_lo, row_hi], 1)
    has = torch.cat([row_has, row_has], 1)
    on_col = (cand_y == col_lo.gather(1, cand_x)) | (cand_y == col_hi.gather(1, cand_x))
    dup = torch.cat([torch.zeros_like(row_lo, dtype=torch.bool), row_lo == row_hi], 1)  # one vertex in the row
    valid = has & on_col & ~dup
    k = max(int(valid.sum(1).max()), 1)  # device sync: the candidates' count
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)[:, :k]
    keep = valid.gather(1, order)[:, :, None]
    # the C code's coordinates: (index + 0.5 or 1) * spacing, on the padded frame
    pts = torch.stack(
        [cand_y.gather(1, order).double() / 2 * dy[:, None], cand_x.gather(1, order).double() / 2 * dx[:, None]], 2
    )
    pts = torch.where(keep, pts, pts[:, :1])  # padding repeats the first (valid) candidate: no new distance
    # without the matrix-product shortcut cdist is sqrt(dy^2 + dx^2) per pair, as the C code; sqrt is
    # monotone and correctly rounded, so the largest of them is the C code's sqrt of the largest square
    return torch.cdist(pts, pts, compute_mode="donot_use_mm_for_euclid_dist").reshape(b, -1).amax(1)


def compute(
    mask: torch.Tensor,
    spacing: torch.Tensor | None = None,
    *,
    names: Sequence[str] | None = None,
    pixels: RoiPixels | None = None,
) -> dict[str, torch.Tensor]:
    """pyradiomics' 2D shape features of each ROI.

    Args:
        mask: ``(B, H, W)`` bool ROIs (zero-padded to a common size).
        spacing: ``(B, 2)`` pixel size in mm (rows, columns); ``None``: 1 mm (pixels).
        names: Features to compute (default: all of :data:`FEATURES`).
        pixels: ``RoiPixels.from_mask(mask)`` when the caller has it (None: built here).

    Returns:
        ``{feature name: (B,) float64}``, pyradiomics' names.

    Raises:
        InputError: An unknown feature name, a mask that is not ``(B, H, W)``, a spacing that
            is not ``(B, 2)`` positive, or an empty ROI.

    Example:
        >>> m = torch.zeros(1, 6, 7, dtype=torch.bool); m[0, 1:4, 1:5] = True  # a 3 x 4 rectangle
        >>> out = compute(m)
        >>> {k: round(float(out[k][0]), 4) for k in ("MeshSurface", "PixelSurface", "Perimeter", "MaximumDiameter")}
        {'MeshSurface': 11.5, 'PixelSurface': 12.0, 'Perimeter': 12.8284, 'MaximumDiameter': 4.4721}
    """
    wanted = list(FEATURES) if names is None else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in FEATURES]
    if unknown:
        raise InputError("shape2D features", f"names among {list(FEATURES)}", str(unknown))
    if mask.dim() != 3:
        raise InputError("mask", "a (B, H, W) tensor", f"shape {tuple(mask.shape)}")
    mask = mask.bool()
    b = mask.shape[0]
    dev = mask.device
    if spacing is None:
        spacing = torch.ones(b, 2, dtype=torch.float64, device=dev)
    spacing = spacing.to(device=dev, dtype=torch.float64)
    if spacing.shape != (b, 2) or not bool((spacing > 0).all()):
        raise InputError("spacing", f"a ({b}, 2) tensor of positive pixel sizes (mm)", f"{tuple(spacing.shape)}")
    n = mask.sum((1, 2))
    if bool((n == 0).any()):
        raise InputError("mask", "at least one pixel in every ROI", f"empty ROIs {(n == 0).nonzero()[:, 0].tolist()}")
    dy, dx = spacing[:, 0], spacing[:, 1]
    nf = n.double()
    out: dict[str, torch.Tensor] = {"PixelSurface": nf * (dx * dy)}
    # the mesh on each frame padded by one background pixel (pyradiomics crops to the ROI's box
    # first; the mesh, its lengths and distances do not depend on where the ROI sits)
    p = torch.nn.functional.pad(mask, (1, 1, 1, 1))

    if _MESH.intersection(wanted):
        q = p.to(torch.uint8)  # the case of each 2 x 2 square in one byte: a quarter of int64's traffic
        case = q[:, :-1, :-1] + (q[:, :-1, 1:] << 1) + (q[:, 1:, 1:] << 2) + (q[:, 1:, :-1] << 3)
        offset = torch.arange(0, 16 * b, 16, dtype=torch.int32, device=dev)[:, None, None]
        hist = torch.bincount((case.to(torch.int32) + offset).reshape(-1), minlength=16 * b)
        hist = hist.reshape(b, 16).double()
        eighths = torch.tensor(_EIGHTHS, dtype=torch.float64, device=dev)
        surface = (hist @ eighths) / 8 * (dy * dx)
        diagonal = torch.sqrt((0.5 * dy) ** 2 + (0.5 * dx) ** 2)
        n_diag = hist @ torch.tensor(_DIAGONALS, dtype=torch.float64, device=dev)
        perimeter = (hist[:, 3] + hist[:, 12]) * dx + (hist[:, 6] + hist[:, 9]) * dy + n_diag * diagonal
        out["MeshSurface"], out["Perimeter"] = surface, perimeter
        out["PerimeterSurfaceRatio"] = perimeter / surface
        out["Sphericity"] = 2 * torch.sqrt(math.pi * surface) / perimeter
    if "MaximumDiameter" in wanted:
        out["MaximumDiameter"] = _diameter(p, dy, dx)
    if _MOMENTS.intersection(wanted):
        # the pixel centres (mm) of each ROI, centred and scaled by 1 / sqrt(N) as pyradiomics does
        pixels = RoiPixels.from_mask(mask) if pixels is None else pixels
        hh, ww = mask.shape[1:]
        cy = (torch.div(pixels.index, ww, rounding_mode="floor") % hh).double() * pixels.per_pixel(dy)
        cx = (pixels.index % ww).double() * pixels.per_pixel(dx)
        root = pixels.per_pixel(torch.sqrt(nf))
        cy = (cy - pixels.per_pixel(pixels.sum(cy) / nf)).div_(root)
        cx = (cx - pixels.per_pixel(pixels.sum(cx) / nf)).div_(root)
        syy, sxx, sxy = pixels.sum(cy * cy), pixels.sum(cx * cx), pixels.sum(cy.mul_(cx))
        zero = torch.zeros((), dtype=torch.float64, device=dev)
        half = (syy + sxx) / 2
        rad = torch.sqrt(((syy - sxx) / 2) ** 2 + sxy * sxy)
        major, minor = half + rad, half - rad
        # pyradiomics: eigenvalues in (-1e-10, 0) are machine error (0); more negative ones give NaN
        major = torch.where((major < 0) & (major > -1e-10), zero, major)
        minor = torch.where((minor < 0) & (minor > -1e-10), zero, minor)
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=dev)
        out["MajorAxisLength"] = torch.where(major < 0, nan, torch.sqrt(major.clamp(min=0)) * 4)
        out["MinorAxisLength"] = torch.where(minor < 0, nan, torch.sqrt(minor.clamp(min=0)) * 4)
        out["Elongation"] = torch.where((minor < 0) | (major < 0), nan, torch.sqrt(minor / major))
    return {name: out[name] for name in wanted}
