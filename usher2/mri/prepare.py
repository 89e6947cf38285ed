"""Preparation of MRI volumes: common grid, intensity normalisation and rigid registration.

Every function works on 3D ``SimpleITK.Image`` objects, which carry their geometry (origin,
spacing, direction), so sequences with different grids or orientations meet in physical space.

Conventions:
    * Arrays are ``(z, y, x)`` (numpy / SimpleITK ``GetArrayFromImage`` order).
    * Spacing, origin and sizes given to or read from SimpleITK are ``(x, y, z)`` in mm.
      The default target spacing ``(0.5, 0.5, 3.0)`` is 0.5 mm in-plane and 3 mm between slices.
    * Mattes mutual information is reported as SimpleITK computes it: **negative, lower is
      better** (a registration that helps makes ``metric_after < metric_before``).

Non-finite voxels (NaN, ±inf): the low-level functions reject them (:class:`InputError`), except
:func:`fill_nonfinite`; :func:`prepare_case` replaces them by the volume's smallest finite value
(background-like for magnitude images) before anything else, and adds the flag
``nan_voxels:<sequence>`` with the count in ``PreparedCase.nonfinite``.

Example:
    >>> import numpy as np
    >>> img = to_image(np.ones((4, 8, 8), np.float32), spacing=(1.0, 1.0, 3.0))
    >>> out = resample(img, spacing=(0.5, 0.5, 3.0))
    >>> out.GetSize(), out.GetSpacing()
    ((16, 16, 4), (0.5, 0.5, 3.0))
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from usher2.io.errors import InputError

__all__ = [
    "INTERPOLATORS",
    "PreparedCase",
    "fill_nonfinite",
    "foreground_mask",
    "n4",
    "normalise",
    "prepare_case",
    "register_rigid",
    "resample",
    "resample_mask",
    "to_array",
    "to_image",
]

Spacing = tuple[float, float, float]

DEFAULT_SPACING: Spacing = (0.5, 0.5, 3.0)

INTERPOLATORS: dict[str, int] = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
    "lanczos": sitk.sitkLanczosWindowedSinc,
}


# --------------------------------------------------------------------------- conversion


def to_image(
    array: np.ndarray,
    spacing: Sequence[float],
    *,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] | None = None,
) -> sitk.Image:
    """Wrap a ``(z, y, x)`` array as a SimpleITK image.

    Args:
        array: Voxel values, shape ``(z, y, x)``.
        spacing: Voxel size in mm, ``(x, y, z)`` order.
        origin: Physical position of voxel ``[0, 0, 0]`` in mm, ``(x, y, z)``.
        direction: Row-major 3x3 direction cosines (9 numbers); identity when omitted.

    Returns:
        The image; ``to_array`` gives the array back.

    Example:
        >>> img = to_image(np.zeros((2, 3, 4)), spacing=(0.5, 0.5, 3.0))
        >>> img.GetSize()
        (4, 3, 2)
    """
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise InputError("array", "a 3D (z, y, x) array", f"shape {arr.shape}")
    sp = _triple(spacing, "spacing")
    if min(sp) <= 0:
        raise InputError("spacing", "three positive voxel sizes in mm (x, y, z)", str(sp))
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(sp)
    img.SetOrigin(_triple(origin, "origin"))
    if direction is not None:
        d = tuple(float(v) for v in direction)
        if len(d) != 9:
            raise InputError("direction", "9 direction cosines (row-major 3x3)", f"{len(d)} numbers")
        img.SetDirection(d)
    return img


def to_array(image: sitk.Image) -> np.ndarray:
    """Copy an image's voxels into a ``(z, y, x)`` numpy array.

    Example:
        >>> to_array(to_image(np.arange(8.0).reshape(2, 2, 2), (1.0, 1.0, 1.0)))[1, 0, 1].item()
        5.0
    """
    return sitk.GetArrayFromImage(image)


# --------------------------------------------------------------------------- resampling


def resample(
    image: sitk.Image,
    spacing: Sequence[float] = DEFAULT_SPACING,
    *,
    reference: sitk.Image | None = None,
    interpolator: str = "linear",
    transform: sitk.Transform | None = None,
) -> sitk.Image:
    """Resample an image to a voxel spacing, or onto another image's grid.

    Without ``reference`` the field of view is kept: the new size is
    ``round(size * old_spacing / spacing)`` per axis and the grid stays centred on the old one,
    with the same origin side and direction. With ``reference`` the output has exactly the
    reference's size, spacing, origin and direction (``spacing`` is then ignored); the images
    meet in physical space, so different direction matrices (flipped or rotated acquisitions) are
    handled. Points outside the input get 0.

    Args:
        image: 3D image.
        spacing: Target voxel size in mm, ``(x, y, z)`` order.
        reference: Image whose grid to use instead of ``spacing``.
        interpolator: One of ``INTERPOLATORS`` (``"linear"``, ``"nearest"``, ``"bspline"``,
            ``"lanczos"``).
        transform: Optional transform from output points to input points (e.g. from
            :func:`register_rigid`); identity when omitted.

    Returns:
        A float32 image (or the input pixel type for ``"nearest"``).

    Example:
        >>> img = to_image(np.zeros((10, 20, 20), np.float32), (0.5, 0.5, 3.0))
        >>> resample(img, (1.0, 1.0, 1.5)).GetSize()
        (10, 10, 20)
    """
    _check_image(image, "image")
    if interpolator not in INTERPOLATORS:
        raise InputError("interpolator", f"one of {sorted(INTERPOLATORS)}", repr(interpolator))
    if reference is not None:
        _check_image(reference, "reference")
        grid = _grid_of(reference)
    else:
        grid = _grid_for_spacing(image, _triple(spacing, "spacing"))
    pixel = image.GetPixelID() if interpolator == "nearest" else sitk.sitkFloat32
    src = image if interpolator == "nearest" else sitk.Cast(image, sitk.sitkFloat32)
    return sitk.Resample(
        src,
        grid["size"],
        transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity),
        INTERPOLATORS[interpolator],
        grid["origin"],
        grid["spacing"],
        grid["direction"],
        0.0,
        pixel,
    )


def resample_mask(
    mask: sitk.Image,
    spacing: Sequence[float] = DEFAULT_SPACING,
    *,
    reference: sitk.Image | None = None,
    method: Literal["linear_argmax", "nearest"] = "linear_argmax",
    keep_small: bool = True,
    transform: sitk.Transform | None = None,
) -> sitk.Image:
    """Resample a label mask, keeping its label values.

    ``"linear_argmax"`` (default) interpolates each label's indicator linearly and gives every
    output voxel the label with the largest interpolated share (background wins ties), i.e. the
    0.5 iso-surface for a single label. Unlike nearest neighbour it does not alias thin
    structures when slices get thicker, and the lesion volume is kept to within the boundary
    band. With ``keep_small`` a label that would vanish entirely (a lesion smaller than half an
    output voxel) is kept at the voxel(s) where its share is largest (or, when no output sample
    lies within one input voxel of it, at the voxel holding its centroid), so a small lesion
    survives.
    ``"nearest"`` is plain nearest-neighbour sampling.

    Args:
        mask: Integer label image, 0 = background.
        spacing: Target voxel size in mm, ``(x, y, z)`` order.
        reference: Image whose grid to use instead of ``spacing``.
        method: ``"linear_argmax"`` or ``"nearest"``.
        keep_small: Keep labels that would otherwise disappear (``"linear_argmax"`` only).
        transform: Optional transform from output points to mask points.

    Returns:
        A uint8 label image (uint16 if a label exceeds 255) on the new grid.

    Example:
        >>> m = np.zeros((6, 20, 20), np.uint8); m[2:4, 8:12, 8:12] = 3
        >>> out = resample_mask(to_image(m, (0.5, 0.5, 3.0)), (1.0, 1.0, 3.0))
        >>> sorted(np.unique(to_array(out)).tolist()), int((to_array(out) == 3).sum())
        ([0, 3], 8)
    """
    _check_image(mask, "mask")
    labels_arr = _label_array(mask, "mask")
    if method not in ("linear_argmax", "nearest"):
        raise InputError("method", "'linear_argmax' or 'nearest'", repr(method))
    labels = [int(v) for v in np.unique(labels_arr) if v != 0]
    out_type = sitk.sitkUInt8 if (max(labels, default=0) <= 255) else sitk.sitkUInt16
    lab_img = sitk.GetImageFromArray(labels_arr.astype(np.uint16 if out_type == sitk.sitkUInt16 else np.uint8))
    lab_img.CopyInformation(mask)
    if method == "nearest" or not labels:
        return resample(lab_img, spacing, reference=reference, interpolator="nearest", transform=transform)
    shares = []
    for lab in labels:
        ind = sitk.GetImageFromArray((labels_arr == lab).astype(np.float32))
        ind.CopyInformation(mask)
        shares.append(to_array(resample(ind, spacing, reference=reference, interpolator="linear", transform=transform)))
    stack = np.stack(shares)
    background = 1.0 - stack.sum(axis=0)
    best = np.argmax(np.concatenate([background[None], stack]), axis=0)
    lut = np.array([0, *labels], dtype=np.uint16)
    out = lut[best]
    res = sitk.GetImageFromArray(out.astype(np.uint8 if out_type == sitk.sitkUInt8 else np.uint16))
    _copy_grid(
        res, _grid_of(reference) if reference is not None else _grid_for_spacing(mask, _triple(spacing, "spacing"))
    )
    if keep_small:
        for i, lab in enumerate(labels):
            if np.any(out == lab):
                continue
            peak = float(stack[i].max())
            if peak > 0:
                out[stack[i] == peak] = lab
            else:  # no output sample within one input voxel: use the voxel holding the centroid
                zyx = np.argwhere(labels_arr == lab).mean(axis=0)
                point = mask.TransformContinuousIndexToPhysicalPoint([float(v) for v in zyx[::-1]])
                idx = res.TransformPhysicalPointToIndex(point)
                if all(0 <= idx[d] < res.GetSize()[d] for d in range(3)):
                    out[idx[2], idx[1], idx[0]] = lab
        kept = sitk.GetImageFromArray(out.astype(np.uint8 if out_type == sitk.sitkUInt8 else np.uint16))
        kept.CopyInformation(res)
        res = kept
    return res


# --------------------------------------------------------------------------- intensity


def fill_nonfinite(image: sitk.Image, value: float | None = None) -> tuple[sitk.Image, int]:
    """Replace NaN/±inf voxels.

    Args:
        image: 3D image.
        value: Replacement; the smallest finite voxel value when omitted.

    Returns:
        ``(float32 image, number of replaced voxels)``.

    Raises:
        InputError: If no voxel is finite.

    Example:
        >>> a = np.ones((2, 2, 2), np.float32); a[0, 0, 0] = np.nan; a[1, 1, 1] = 0.5
        >>> img, n = fill_nonfinite(to_image(a, (1.0, 1.0, 1.0)))
        >>> n, float(to_array(img)[0, 0, 0])
        (1, 0.5)
    """
    _check_image(image, "image")
    arr = to_array(sitk.Cast(image, sitk.sitkFloat32))
    bad = ~np.isfinite(arr)
    count = int(bad.sum())
    if count == 0:
        return sitk.Cast(image, sitk.sitkFloat32), 0
    if count == arr.size:
        raise InputError("image", "at least one finite voxel", f"all {count} voxels NaN or infinite")
    arr[bad] = float(np.min(arr[~bad])) if value is None else value
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    return out, count


def foreground_mask(image: sitk.Image) -> sitk.Image:
    """Body / foreground mask: Otsu threshold, largest connected component, holes filled.

    Args:
        image: 3D image with a brighter body on a darker background.

    Returns:
        A uint8 0/1 image on the same grid.

    Raises:
        InputError: For non-finite voxels or a constant image (no foreground to find).

    Example:
        >>> z, y, x = np.mgrid[:8, :32, :32]
        >>> body = ((y - 16) ** 2 + (x - 16) ** 2 < 100).astype(np.float32) * 100 + 5
        >>> fg = foreground_mask(to_image(body, (1.0, 1.0, 3.0)))
        >>> int(to_array(fg).sum()) == int((body > 50).sum())
        True
    """
    arr = _finite_array(image, "image")
    if float(arr.max()) == float(arr.min()):
        raise InputError("image", "varying intensities to separate foreground", f"a constant image ({arr.flat[0]})")
    img = sitk.Cast(image, sitk.sitkFloat32)
    otsu = sitk.OtsuThreshold(img, 0, 1, 128)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(otsu), sortByObjectSize=True)
    largest = sitk.Cast(cc == 1, sitk.sitkUInt8)
    filled = sitk.BinaryFillhole(largest, fullyConnected=False, foregroundValue=1)
    return sitk.Cast(filled, sitk.sitkUInt8)


def normalise(
    image: sitk.Image,
    foreground: sitk.Image | None = None,
    clip: tuple[float, float] | None = (0.5, 99.5),
) -> sitk.Image:
    """Z-score an image inside its foreground after a percentile clip.

    The percentiles ``clip`` of the foreground voxels bound the whole image; the clipped image is
    then shifted and scaled so the foreground has mean 0 and standard deviation 1 (population
    std). Background voxels get the same affine map.

    Args:
        image: 3D image.
        foreground: 0/1 mask on the same grid; :func:`foreground_mask` when omitted.
        clip: Lower and upper percentile (0-100), or None for no clipping.

    Returns:
        A float32 image on the same grid.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> img = to_image(rng.normal(50, 5, (4, 16, 16)).astype(np.float32), (1.0, 1.0, 1.0))
        >>> fg = to_image(np.ones((4, 16, 16), np.uint8), (1.0, 1.0, 1.0))
        >>> a = to_array(normalise(img, fg))
        >>> abs(float(a.mean())) < 1e-6, round(float(a.std()), 4)
        (True, 1.0)
    """
    arr = _finite_array(image, "image").astype(np.float64)
    fg_img = foreground_mask(image) if foreground is None else foreground
    _check_same_grid(image, fg_img, "foreground")
    fg = to_array(fg_img) > 0
    if not fg.any():
        raise InputError("foreground", "at least one foreground voxel", "an empty mask", fix="pass foreground=None")
    if clip is not None:
        lo_p, hi_p = clip
        if not 0 <= lo_p < hi_p <= 100:
            raise InputError("clip", "two percentiles 0 <= low < high <= 100", str(clip))
        lo, hi = np.percentile(arr[fg], [lo_p, hi_p])
        arr = np.clip(arr, lo, hi)
    vals = arr[fg]
    mean, std = float(vals.mean()), float(vals.std())
    if std == 0:
        raise InputError("image", "varying intensities inside the foreground", f"constant value {mean}")
    out = sitk.GetImageFromArray(((arr - mean) / std).astype(np.float32))
    out.CopyInformation(image)
    return out


def n4(
    image: sitk.Image,
    foreground: sitk.Image | None = None,
    *,
    shrink: int = 4,
    iterations: Sequence[int] = (50, 50, 30),
    fitting_levels: int | None = None,
) -> sitk.Image:
    """N4 bias-field correction (Tustison et al. 2010), estimated on a shrunken copy.

    The log bias field is fitted on the image shrunk by ``shrink`` (in-plane; along z only as far
    as at least 8 slices remain) and evaluated at full resolution: ``corrected = image / exp(b)``.

    Args:
        image: 3D image, positive inside the foreground.
        foreground: 0/1 mask of the voxels to fit; :func:`foreground_mask` when omitted.
        shrink: Shrink factor for the estimation.
        iterations: Maximum iterations per fitting level (its length is the number of levels
            unless ``fitting_levels`` is given).
        fitting_levels: Number of B-spline fitting levels.

    Returns:
        The corrected float32 image on the same grid.

    Example:
        >>> z, y, x = np.mgrid[:8, :32, :32]
        >>> body = ((y - 16) ** 2 + (x - 16) ** 2 < 150) * (100.0 * (1 + 0.01 * x)) + 1
        >>> out = n4(to_image(body.astype(np.float32), (1.0, 1.0, 3.0)), iterations=(10,))
        >>> out.GetSize()
        (32, 32, 8)
    """
    arr = _finite_array(image, "image")
    fg_img = foreground_mask(image) if foreground is None else sitk.Cast(foreground > 0, sitk.sitkUInt8)
    _check_same_grid(image, fg_img, "foreground")
    fg = to_array(fg_img) > 0
    if not fg.any():
        raise InputError("foreground", "at least one foreground voxel", "an empty mask")
    if float(arr[fg].min()) <= 0:
        raise InputError(
            "image", "positive intensities inside the foreground (N4 fits a log field)", f"min {arr[fg].min()}"
        )
    if shrink < 1:
        raise InputError("shrink", "an integer >= 1", str(shrink))
    img = sitk.Cast(image, sitk.sitkFloat32)
    size = img.GetSize()
    factors = [max(1, min(shrink, s // 8)) for s in size]
    small = sitk.Shrink(img, factors)
    small_mask = sitk.Shrink(fg_img, factors)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
    if fitting_levels is not None:
        corrector.SetNumberOfFittingLevels(int(fitting_levels))
    corrector.Execute(small, small_mask)
    log_bias = corrector.GetLogBiasFieldAsImage(img)
    return sitk.Cast(img / sitk.Exp(log_bias), sitk.sitkFloat32)


# --------------------------------------------------------------------------- registration


def _single_threaded(fn: Any) -> Any:
    """Run ``fn`` with SimpleITK's default thread count at 1, restored after (see register_rigid)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)

    return run


@_single_threaded
def register_rigid(
    fixed: sitk.Image,
    moving: sitk.Image,
    *,
    fixed_mask: sitk.Image | None = None,
    iterations: int = 100,
    shrink: Sequence[int] = (4, 2, 1),
    smoothing_mm: Sequence[float] = (2.0, 1.0, 0.0),
    sampling: float = 0.1,
    max_samples: int | None = 5_000,
    bins: int = 32,
    learning_rate: float = 1.0,
    min_step: float = 1e-4,
    relaxation: float = 0.7,
    seed: int = 42,
    initialise: Literal["geometry", "moments", "identity"] = "geometry",
    tolerance: float = 1e-3,
) -> tuple[sitk.Euler3DTransform, sitk.Image, dict[str, Any]]:
    """Rigidly register ``moving`` to ``fixed`` with Mattes mutual information.

    Euler 3D transform (3 rotations about the fixed image's centre + translation), initialised
    by ``CenteredTransformInitializer`` (``"geometry"`` aligns the grid centres, ``"moments"``
    the intensity centroids, ``"identity"`` keeps the scanner frame), multi-resolution
    (``shrink`` / ``smoothing_mm`` per level), regular-step gradient descent with physical-shift
    scales, and random metric sampling with a fixed ``seed`` so a run can be replayed. It runs on
    one SimpleITK thread (the default is restored after): with several, the per-thread metric sums
    and pyramid filters made two runs of one seed differ, and ``usher2 mri reproduce --quick``
    selected different features on a rerun.

    The transform maps fixed-grid points to moving-image points, so
    ``resample(moving, reference=fixed, transform=t)`` puts the moving image on the fixed grid.

    Failure never raises: a constant image, an optimizer exception, zero iterations, or a final
    metric worse than the start (by more than ``tolerance`` x |start|) give ``success=False``
    with a ``reason``; the initial transform is then returned. Mattes MI is negative and lower is
    better, so success means ``metric_after <= metric_before`` (up to the tolerance, so images
    that are already aligned do not fail).

    Args:
        fixed: Reference image (defines the output grid).
        moving: Image to align.
        fixed_mask: Optional 0/1 mask on the fixed grid restricting the metric.
        iterations: Maximum optimizer iterations per level.
        shrink: Shrink factor per level.
        smoothing_mm: Gaussian smoothing sigma per level, in mm.
        sampling: Fraction of fixed voxels sampled for the metric (0-1].
        max_samples: Cap on the metric samples per level (keeps large grids fast), None for no cap.
        bins: Histogram bins of Mattes MI.
        learning_rate: Initial step in mm (physical-shift scales).
        min_step: Smallest step (mm) before the optimizer stops.
        relaxation: Step shrink factor when the gradient changes direction.
        seed: Seed of the metric sampling (0 would mean the wall clock in SimpleITK: not replayable).
        initialise: Initial transform: ``"geometry"``, ``"moments"`` or ``"identity"``.
        tolerance: Relative tolerance of the "metric did not get worse" test.

    Returns:
        ``(transform, moving resampled on the fixed grid (float32), report)``. The report holds
        ``success``, ``reason``, ``metric`` (``"mattes_mi"``), ``metric_before``,
        ``metric_after`` (None when not computable), ``iterations`` (over all levels),
        ``stop_condition``, ``translation_mm`` (x, y, z), ``rotation_deg`` (about x, y, z),
        ``seconds``.

    Example:
        >>> z, y, x = np.mgrid[:12, :40, :40].astype(np.float32)
        >>> vol = to_image(100 * np.exp(-((x - 20) ** 2 + (y - 18) ** 2) / 80 - (z - 6) ** 2 / 20), (1, 1, 2))
        >>> _, _, rep = register_rigid(vol, vol)
        >>> rep["success"], rep["metric_before"] < 0
        (True, True)
    """
    t0 = time.perf_counter()
    _check_registration(fixed, moving, shrink, smoothing_mm, sampling, initialise)
    fix, mov, constant = _float_images(fixed, moving)
    report = _registration_report()
    initial = sitk.Euler3DTransform()
    initial.SetCenter(fix.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in fix.GetSize()]))

    def finish(transform: sitk.Euler3DTransform, reason: str, success: bool) -> tuple:
        return _finish_registration(report, transform, reason, success, fix, mov, t0)

    if constant:
        return finish(initial, constant, False)
    if initialise != "identity":
        try:
            initial = _initial_transform(fix, mov, initialise)
        except RuntimeError as exc:  # e.g. zero mass for "moments": reported, identity kept
            return finish(initial, f"initialiser failed: {_first_line(exc)}", False)

    mattes = _MattesMetric(int(np.prod(fix.GetSize())), sampling, max_samples, bins, seed, fixed_mask)
    report["metric_before"] = mattes.evaluate(fix, mov, initial)
    final, report["iterations"], stop = _optimise(
        mattes, fix, mov, initial, iterations, shrink, smoothing_mm, learning_rate, min_step, relaxation
    )
    if final is None:
        return finish(initial, f"optimizer failed: {stop}", False)
    report["stop_condition"] = stop
    report["metric_after"] = mattes.evaluate(fix, mov, final)
    failure = _registration_failure(report["metric_before"], report["metric_after"], report["iterations"], tolerance)
    return finish(initial, failure, False) if failure else finish(final, "ok", True)


def _check_registration(
    fixed: sitk.Image,
    moving: sitk.Image,
    shrink: Sequence[int],
    smoothing_mm: Sequence[float],
    sampling: float,
    initialise: str,
) -> None:
    """Raise :class:`InputError` for bad :func:`register_rigid` arguments."""
    _check_image(fixed, "fixed")
    _check_image(moving, "moving")
    if len(shrink) != len(smoothing_mm):
        raise InputError("smoothing_mm", f"one sigma per level ({len(shrink)})", f"{len(smoothing_mm)} values")
    if not 0 < sampling <= 1:
        raise InputError("sampling", "a fraction in (0, 1]", str(sampling))
    if initialise not in ("geometry", "moments", "identity"):
        raise InputError("initialise", "'geometry', 'moments' or 'identity'", repr(initialise))


def _float_images(fixed: sitk.Image, moving: sitk.Image) -> tuple[sitk.Image, sitk.Image, str]:
    """Both images as float32, checked finite, and why mutual information is undefined for them
    ("" unless one is constant)."""
    fix = sitk.Cast(fixed, sitk.sitkFloat32)
    mov = sitk.Cast(moving, sitk.sitkFloat32)
    for name, arr in (("fixed", _finite_array(fix, "fixed")), ("moving", _finite_array(mov, "moving"))):
        if float(arr.max()) == float(arr.min()):
            return fix, mov, f"{name} image is constant ({arr.flat[0]}); mutual information undefined"
    return fix, mov, ""


def _registration_report() -> dict[str, Any]:
    """The report of :func:`register_rigid` before anything is known."""
    return {
        "success": False,
        "reason": "",
        "metric": "mattes_mi",
        "metric_before": None,
        "metric_after": None,
        "iterations": 0,
        "stop_condition": "",
        "translation_mm": (0.0, 0.0, 0.0),
        "rotation_deg": (0.0, 0.0, 0.0),
        "seconds": 0.0,
    }


def _finish_registration(
    report: dict[str, Any],
    transform: sitk.Euler3DTransform,
    reason: str,
    success: bool,
    fix: sitk.Image,
    mov: sitk.Image,
    t0: float,
) -> tuple[sitk.Euler3DTransform, sitk.Image, dict[str, Any]]:
    """:func:`register_rigid`'s result: the transform, ``mov`` resampled through it on ``fix``'s grid, the report."""
    report["success"] = success
    report["reason"] = reason
    report["translation_mm"] = tuple(float(v) for v in transform.GetTranslation())
    report["rotation_deg"] = tuple(
        float(math.degrees(a)) for a in (transform.GetAngleX(), transform.GetAngleY(), transform.GetAngleZ())
    )
    report["seconds"] = time.perf_counter() - t0
    return transform, resample(mov, reference=fix, transform=transform), report


def _initial_transform(fix: sitk.Image, mov: sitk.Image, initialise: str) -> sitk.Euler3DTransform:
    """``CenteredTransformInitializer`` aligning the grid centres (``"geometry"``) or the intensity
    centroids (``"moments"``); raises SimpleITK's RuntimeError when it fails."""
    mode = (
        sitk.CenteredTransformInitializerFilter.GEOMETRY
        if initialise == "geometry"
        else sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    return sitk.Euler3DTransform(sitk.CenteredTransformInitializer(fix, mov, sitk.Euler3DTransform(), mode))


@dataclass(frozen=True)
class _MattesMetric:
    """The Mattes mutual information settings of :func:`register_rigid` (random sampling, seeded).

    Attributes:
        n_voxels: Voxels of the fixed image.
        sampling: Fraction of fixed voxels sampled.
        max_samples: Cap on the samples per level, or None.
        bins: Histogram bins.
        seed: Seed of the sampling.
        fixed_mask: Optional 0/1 mask on the fixed grid restricting the metric.
    """

    n_voxels: int
    sampling: float
    max_samples: int | None
    bins: int
    seed: int
    fixed_mask: sitk.Image | None

    def fraction(self, level_shrink: int) -> float:
        """The sampled fraction at a level shrunk by ``level_shrink`` (``sampling``, capped by ``max_samples``)."""
        n = max(1, self.n_voxels // level_shrink**3)
        return self.sampling if self.max_samples is None else min(self.sampling, max(self.max_samples / n, 1e-4))

    def method(self) -> sitk.ImageRegistrationMethod:
        """A registration method with this metric, linear interpolation and the full-resolution sampling."""
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=self.bins)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(self.fraction(1), self.seed)
        reg.SetInterpolator(sitk.sitkLinear)
        # gradients only at the sampled points, not a whole gradient image per level (much faster)
        reg.MetricUseFixedImageGradientFilterOff()
        reg.MetricUseMovingImageGradientFilterOff()
        if self.fixed_mask is not None:
            reg.SetMetricFixedMask(self.fixed_mask)
        return reg

    def evaluate(self, fix: sitk.Image, mov: sitk.Image, transform: sitk.Transform) -> float | None:
        """The metric of ``mov`` through ``transform`` against ``fix``; None when it cannot be computed."""
        reg = self.method()
        reg.SetInitialTransform(sitk.Euler3DTransform(transform), inPlace=False)
        try:
            return float(reg.MetricEvaluate(fix, mov))
        except RuntimeError:
            return None


def _optimise(
    mattes: _MattesMetric,
    fix: sitk.Image,
    mov: sitk.Image,
    initial: sitk.Euler3DTransform,
    iterations: int,
    shrink: Sequence[int],
    smoothing_mm: Sequence[float],
    learning_rate: float,
    min_step: float,
    relaxation: float,
) -> tuple[sitk.Euler3DTransform | None, int, str]:
    """Multi-resolution regular-step gradient descent from ``initial`` (see :func:`register_rigid`).

    Returns:
        ``(final transform, iterations over all levels, stop condition)``, or ``(None, iterations,
        the error's message)`` when the optimizer raised.
    """
    reg = mattes.method()
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=learning_rate,
        minStep=min_step,
        numberOfIterations=int(iterations),
        relaxationFactor=relaxation,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([int(s) for s in shrink])
    reg.SetMetricSamplingPercentagePerLevel([mattes.fraction(int(s)) for s in shrink], mattes.seed)
    reg.SetSmoothingSigmasPerLevel([float(s) for s in smoothing_mm])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(sitk.Euler3DTransform(initial), inPlace=False)
    count = [0]
    reg.AddCommand(sitk.sitkIterationEvent, lambda: count.__setitem__(0, count[0] + 1))
    try:
        result = reg.Execute(fix, mov)
    except RuntimeError as exc:
        return None, count[0], _first_line(exc)
    stop = reg.GetOptimizerStopConditionDescription()
    final = sitk.Euler3DTransform(sitk.CompositeTransform(result).GetNthTransform(0))
    return final, count[0], stop


def _registration_failure(before: float | None, after: float | None, iterations: int, tolerance: float) -> str:
    """Why an optimizer run does not count as a registration ("" when it does)."""
    if iterations == 0:
        return "optimizer made no iterations"
    if after is None:
        return "metric could not be evaluated after registration"
    if before is not None and after > before + tolerance * abs(before):
        return f"metric got worse ({before:.4f} -> {after:.4f})"
    return ""


# --------------------------------------------------------------------------- whole case


@dataclass(frozen=True)
class PreparedCase:
    """One case's sequences and lesion mask on a common grid.

    Attributes:
        volumes: Sequence name -> float32 image on the common grid (normalised if asked).
        mask: uint8 lesion label image on the same grid.
        reference: Name of the reference sequence that defines the grid.
        spacing: Voxel size of the grid in mm, ``(x, y, z)``.
        registration: Sequence name -> report of :func:`register_rigid` (not for the reference).
        flags: Quality flags: ``empty_mask``, ``lesion_touches_edge``,
            ``registration_failed:<seq>``, ``nan_voxels:<seq>``.
        nonfinite: Sequence name -> number of NaN/inf voxels replaced (only sequences with some).
        timings: Seconds per stage (``nonfinite``, ``n4``, ``resample``, ``register``, ``mask``,
            ``normalise``, ``total``).
    """

    volumes: dict[str, sitk.Image]
    mask: sitk.Image
    reference: str
    spacing: Spacing
    registration: dict[str, dict[str, Any]] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    nonfinite: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def prepare_case(
    volumes: Mapping[str, sitk.Image],
    mask: sitk.Image | np.ndarray,
    *,
    reference: str | None = None,
    spacing: Sequence[float] = DEFAULT_SPACING,
    register: bool = True,
    n4: bool = False,
    normalise: bool = True,
    registration: Mapping[str, Any] | None = None,
) -> PreparedCase:
    """Bring one case's sequences and lesion mask onto a common grid.

    Steps: replace non-finite voxels (flag ``nan_voxels:<seq>``); optional N4 on each native
    volume; resample the reference sequence to ``spacing`` (this is the common grid); register
    every other sequence rigidly to it and resample it through the transform in one
    interpolation (without ``register``, or when registration fails, by physical coordinates
    alone); resample the mask label-preservingly; z-score every sequence inside the reference's
    foreground mask.

    The mask is placed by its own geometry. A numpy mask must have the reference volume's
    ``(z, y, x)`` shape and takes its geometry; a mask image that does not overlap the reference
    volume in physical space is an error.

    Args:
        volumes: Sequence name -> 3D image (convert arrays with :func:`to_image`).
        mask: Lesion label mask (image, or array on the reference volume's grid).
        reference: Reference sequence; ``"t2"`` if present, else the first.
        spacing: Target voxel size in mm, ``(x, y, z)``.
        register: Register non-reference sequences to the reference.
        n4: Run N4 bias-field correction first (off by default: slow and optional).
        normalise: Z-score each volume inside the reference foreground.
        registration: Extra keyword arguments for :func:`register_rigid`.

    Returns:
        The :class:`PreparedCase`.

    Example:
        >>> z, y, x = np.mgrid[:8, :32, :32]
        >>> body = (((y - 16) ** 2 + (x - 16) ** 2) < 150) * 100.0 + 1 + x
        >>> les = (((y - 16) ** 2 + (x - 16) ** 2) < 9) & (z > 2) & (z < 6)
        >>> case = prepare_case({"t2": to_image(body, (1, 1, 3))}, les.astype(np.uint8), spacing=(2, 2, 3))
        >>> case.mask.GetSize(), case.flags
        ((16, 16, 8), ())
    """
    t_start = time.perf_counter()
    timings = dict.fromkeys(("nonfinite", "n4", "resample", "register", "mask", "normalise"), 0.0)
    ref_name = _reference_name(volumes, reference)
    target = _triple(spacing, "spacing")
    flags: list[str] = []

    with _timed(timings, "nonfinite"):
        native, nonfinite = _filled(volumes)
        flags += [f"nan_voxels:{name}" for name in nonfinite]

    mask_img = _mask_image(mask, volumes[ref_name])

    if n4:
        with _timed(timings, "n4"):
            native = {name: _n4(vol) for name, vol in native.items()}

    with _timed(timings, "resample"):
        grid = resample(native[ref_name], target)
        out: dict[str, sitk.Image] = {ref_name: grid}
        if not register:
            out.update({name: resample(vol, reference=grid) for name, vol in native.items() if name != ref_name})

    reports: dict[str, dict[str, Any]] = {}
    if register:
        with _timed(timings, "register"):
            registered, reports = _registered(grid, native, ref_name, registration)
            out.update(registered)
            flags += [f"registration_failed:{name}" for name, rep in reports.items() if not rep["success"]]
    out = {name: out[name] for name in volumes}

    with _timed(timings, "mask"):
        mask_out = resample_mask(mask_img, reference=grid)
        flags += _mask_flags(to_array(mask_out))

    if normalise:
        with _timed(timings, "normalise"):
            fg = foreground_mask(grid)
            out = {name: _normalise(vol, fg) for name, vol in out.items()}
    timings["total"] = time.perf_counter() - t_start
    return PreparedCase(
        volumes=out,
        mask=mask_out,
        reference=ref_name,
        spacing=target,
        registration=reports,
        flags=tuple(flags),
        nonfinite=nonfinite,
        timings=timings,
    )


# ``prepare_case`` has keyword arguments named like these functions
_n4 = n4
_normalise = normalise


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Time the block into ``timings[stage]`` (seconds; not set when the block raises)."""
    t = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - t


def _reference_name(volumes: Mapping[str, sitk.Image], reference: str | None) -> str:
    """The reference sequence of :func:`prepare_case` (``"t2"`` if present, else the first), checked."""
    if not volumes:
        raise InputError("volumes", "at least one sequence", "an empty mapping")
    for name, vol in volumes.items():
        _check_image(vol, f"volumes[{name!r}]")
    ref_name = reference if reference is not None else ("t2" if "t2" in volumes else next(iter(volumes)))
    if ref_name not in volumes:
        raise InputError("reference", f"one of {sorted(volumes)}", repr(ref_name))
    return ref_name


def _filled(volumes: Mapping[str, sitk.Image]) -> tuple[dict[str, sitk.Image], dict[str, int]]:
    """Every volume with its non-finite voxels replaced (:func:`fill_nonfinite`), and the counts of
    the volumes that had some."""
    native: dict[str, sitk.Image] = {}
    nonfinite: dict[str, int] = {}
    for name, vol in volumes.items():
        native[name], count = fill_nonfinite(vol)
        if count:
            nonfinite[name] = count
    return native, nonfinite


def _registered(
    grid: sitk.Image, native: Mapping[str, sitk.Image], ref_name: str, registration: Mapping[str, Any] | None
) -> tuple[dict[str, sitk.Image], dict[str, dict[str, Any]]]:
    """Every non-reference volume registered to ``grid`` and resampled on it (:func:`register_rigid`),
    and the registration reports."""
    out: dict[str, sitk.Image] = {}
    reports: dict[str, dict[str, Any]] = {}
    for name, vol in native.items():
        if name == ref_name:
            continue
        _, out[name], reports[name] = register_rigid(grid, vol, **dict(registration or {}))
    return out, reports


def _mask_flags(m: np.ndarray) -> list[str]:
    """``empty_mask``, or ``lesion_touches_edge`` when a lesion voxel lies on a face of the grid."""
    if not m.any():
        return ["empty_mask"]
    if m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any() or m[:, :, 0].any() or m[:, :, -1].any():
        return ["lesion_touches_edge"]
    return []


# --------------------------------------------------------------------------- helpers


def _triple(values: Sequence[float], where: str) -> Spacing:
    vals = tuple(float(v) for v in values)
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise InputError(where, "three finite numbers in (x, y, z) order", str(tuple(values)))
    return vals  # type: ignore[return-value]


def _check_image(image: Any, where: str) -> None:
    if not isinstance(image, sitk.Image):
        raise InputError(where, "a SimpleITK image", type(image).__name__, fix="convert with to_image(array, spacing)")
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            where, "a scalar 3D image", f"{image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} channels"
        )


def _finite_array(image: sitk.Image, where: str) -> np.ndarray:
    _check_image(image, where)
    arr = to_array(image)
    bad = int(np.size(arr) - np.isfinite(arr).sum())
    if bad:
        raise InputError(where, "finite voxel values", f"{bad} NaN or infinite voxels", fix="use fill_nonfinite first")
    return arr


def _label_array(mask: sitk.Image, where: str) -> np.ndarray:
    arr = to_array(mask)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise InputError(where, "integer label values", "non-integer or non-finite values")
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise InputError(where, "labels in 0..65535", f"range {arr.min()}..{arr.max()}")
    return arr.astype(np.int64)


def _grid_of(image: sitk.Image) -> dict[str, Any]:
    return {
        "size": image.GetSize(),
        "spacing": image.GetSpacing(),
        "origin": image.GetOrigin(),
        "direction": image.GetDirection(),
    }


def _grid_for_spacing(image: sitk.Image, spacing: Spacing) -> dict[str, Any]:
    if min(spacing) <= 0:
        raise InputError("spacing", "three positive voxel sizes in mm (x, y, z)", str(spacing))
    old_size = np.array(image.GetSize(), float)
    old_sp = np.array(image.GetSpacing(), float)
    new_sp = np.array(spacing, float)
    new_size = np.maximum(1, np.round(old_size * old_sp / new_sp)).astype(int)
    # keep the centre of the field of view where it was
    shift = ((old_size - 1) * old_sp - (new_size - 1) * new_sp) / 2
    direction = np.array(image.GetDirection(), float).reshape(3, 3)
    origin = np.array(image.GetOrigin(), float) + direction @ shift
    return {
        "size": tuple(int(s) for s in new_size),
        "spacing": tuple(float(s) for s in new_sp),
        "origin": tuple(float(o) for o in origin),
        "direction": image.GetDirection(),
    }


def _copy_grid(image: sitk.Image, grid: dict[str, Any]) -> None:
    image.SetSpacing(grid["spacing"])
    image.SetOrigin(grid["origin"])
    image.SetDirection(grid["direction"])


def _check_same_grid(image: sitk.Image, other: sitk.Image, where: str) -> None:
    _check_image(other, where)
    same = (
        image.GetSize() == other.GetSize()
        and np.allclose(image.GetSpacing(), other.GetSpacing(), atol=1e-4)
        and np.allclose(image.GetOrigin(), other.GetOrigin(), atol=1e-3)
        and np.allclose(image.GetDirection(), other.GetDirection(), atol=1e-4)
    )
    if not same:
        raise InputError(
            where,
            f"the image's grid (size {image.GetSize()}, spacing {image.GetSpacing()})",
            f"size {other.GetSize()}, spacing {other.GetSpacing()}",
            fix="resample it with resample_mask(..., reference=image)",
        )


def _mask_image(mask: sitk.Image | np.ndarray, ref: sitk.Image) -> sitk.Image:
    if isinstance(mask, np.ndarray):
        shape = tuple(reversed(ref.GetSize()))
        if mask.shape != shape:
            raise InputError(
                "mask",
                f"an array of the reference volume's (z, y, x) shape {shape}",
                f"shape {mask.shape}",
                fix="pass the mask as a SimpleITK image with its own geometry",
            )
        img = sitk.GetImageFromArray(mask.astype(np.uint8) if mask.dtype == np.bool_ else mask)
        img.CopyInformation(ref)
        return img
    _check_image(mask, "mask")
    lo_m, hi_m = _bounds(mask)
    lo_r, hi_r = _bounds(ref)
    if np.any(hi_m < lo_r) or np.any(hi_r < lo_m):
        raise InputError(
            "mask",
            "a mask overlapping the reference volume in physical space",
            f"mask box {np.round(lo_m, 1).tolist()}..{np.round(hi_m, 1).tolist()} mm vs volume box "
            f"{np.round(lo_r, 1).tolist()}..{np.round(hi_r, 1).tolist()} mm",
            fix="check the mask's origin, spacing and direction",
        )
    return mask


def _bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    size = image.GetSize()
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint([c[i] * size[i] - 0.5 for i in range(3)])
            for c in np.ndindex(2, 2, 2)
        ]
    )
    return corners.min(axis=0), corners.max(axis=0)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK messages start with a file/line banner; the description is the last line
    return lines[-1] if lines else type(exc).__name__
