"""Tests for usher2.mri.prepare on seeded synthetic volumes whose geometry is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from usher2.io.errors import InputError
from usher2.mri.prepare import (
    PreparedCase,
    fill_nonfinite,
    foreground_mask,
    n4,
    normalise,
    prepare_case,
    register_rigid,
    resample,
    resample_mask,
    to_array,
    to_image,
)

SHAPE = (20, 64, 64)  # (z, y, x)
SPACING = (1.0, 1.0, 3.0)  # (x, y, z) mm


@pytest.fixture(autouse=True)
def _one_thread():
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    yield
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def _points(shape=SHAPE, spacing=SPACING) -> np.ndarray:
    """Physical (x, y, z) mm of each voxel, centred on 0, shape (z, y, x, 3)."""
    z, y, x = np.indices(shape, dtype=np.float64)
    return np.stack(
        [
            (x - (shape[2] - 1) / 2) * spacing[0],
            (y - (shape[1] - 1) / 2) * spacing[1],
            (z - (shape[0] - 1) / 2) * spacing[2],
        ],
        axis=-1,
    )


def _ellipsoid(p: np.ndarray, centre, radii, width: float = 1.0) -> np.ndarray:
    q = (p - np.asarray(centre, float)) / np.asarray(radii, float)
    d = (np.sqrt((q**2).sum(-1)) - 1) * min(radii)
    return 1 / (1 + np.exp(d / width))


LESION = ((6.0, -4.0, 3.0), (6.0, 5.0, 7.0))


def _phantom_at(p: np.ndarray) -> np.ndarray:
    """Smooth body with tissue compartments and a bright ellipsoid lesion, evaluated at points p."""
    v = 100 * _ellipsoid(p, (0, 0, 0), (28, 22, 24))
    v += 60 * _ellipsoid(p, (-8, 5, -4), (9, 6, 12))
    v -= 50 * _ellipsoid(p, (10, -6, 6), (5, 8, 10))
    v += 40 * _ellipsoid(p, (2, 12, 0), (12, 4, 15))
    v += 80 * _ellipsoid(p, *LESION)
    return (v + 2).astype(np.float32)


def _origin(shape=SHAPE, spacing=SPACING) -> tuple[float, float, float]:
    return tuple(float(v) for v in _points(shape, spacing)[0, 0, 0])


def _phantom(shape=SHAPE, spacing=SPACING) -> tuple[sitk.Image, sitk.Image]:
    p = _points(shape, spacing)
    img = to_image(_phantom_at(p), spacing, origin=_origin(shape, spacing))
    q = (p - np.asarray(LESION[0])) / np.asarray(LESION[1])
    mask = to_image(((q**2).sum(-1) <= 1).astype(np.uint8), spacing, origin=_origin(shape, spacing))
    return img, mask


# --------------------------------------------------------------------------- resampling


def test_resample_spacing_and_size_exact():
    img, _ = _phantom()
    out = resample(img, (0.5, 0.5, 1.5))
    assert out.GetSpacing() == (0.5, 0.5, 1.5)
    assert out.GetSize() == (128, 128, 40)
    assert out.GetDirection() == img.GetDirection()
    # the field of view keeps its centre
    centre_in = img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in img.GetSize()])
    centre_out = out.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in out.GetSize()])
    np.testing.assert_allclose(centre_out, centre_in, atol=1e-9)


def test_linear_ramp_stays_linear():
    p = _points()
    ramp = (2.0 * p[..., 0] - 0.5 * p[..., 1] + 1.5 * p[..., 2] + 10).astype(np.float32)
    img = to_image(ramp, SPACING, origin=_origin())
    out = resample(img, (0.7, 1.3, 2.0))
    arr = to_array(out)
    idx = np.indices(arr.shape).reshape(3, -1).T[:, ::-1]  # (x, y, z) indices
    pts = np.array([out.TransformIndexToPhysicalPoint([int(i) for i in ix]) for ix in idx]).reshape(*arr.shape, 3)
    expected = 2.0 * pts[..., 0] - 0.5 * pts[..., 1] + 1.5 * pts[..., 2] + 10
    half = np.array(SPACING) * (np.array(SHAPE[::-1]) - 1) / 2
    inside = np.all(np.abs(pts) <= half - 1e-6, axis=-1)  # interior: within the input's voxel centres
    assert inside.sum() > 0.8 * inside.size
    np.testing.assert_allclose(arr[inside], expected[inside], atol=1e-3)


def test_unknown_interpolator_lists_options():
    img, _ = _phantom()
    with pytest.raises(InputError, match="linear"):
        resample(img, interpolator="cubic")


def test_resample_onto_reference_with_other_direction():
    """A copy stored flipped in x and rotated 90° in-plane resamples back onto the original."""
    img, _ = _phantom()
    arr = to_array(img)
    # store the same physical object with a direction matrix that flips x and swaps x/y
    stored = np.ascontiguousarray(np.transpose(arr[:, :, ::-1], (0, 2, 1)))  # new (z, y', x') = old (z, x_flipped, y)
    other = sitk.GetImageFromArray(stored)
    other.SetSpacing((SPACING[1], SPACING[0], SPACING[2]))
    # index i' (along new x') walks old y; index j' (new y') walks old x backwards
    other.SetDirection((0, -1, 0, 1, 0, 0, 0, 0, 1))
    last_x = img.TransformIndexToPhysicalPoint((SHAPE[2] - 1, 0, 0))
    other.SetOrigin(last_x)
    assert other.TransformIndexToPhysicalPoint((3, 5, 2)) == img.TransformIndexToPhysicalPoint((SHAPE[2] - 1 - 5, 3, 2))
    back = to_array(resample(other, reference=img))
    assert np.corrcoef(back.ravel(), arr.ravel())[0, 1] > 0.99
    np.testing.assert_allclose(back, arr, atol=1e-3)
    # a 20° in-plane rotation about the centre: compare where both are defined
    rot = sitk.Euler3DTransform()
    rot.SetRotation(0, 0, math.radians(20))
    rotated = sitk.Image(img)
    rotated.SetDirection(rot.GetMatrix())
    rotated.SetOrigin(rot.TransformPoint(img.GetOrigin()))
    moved = resample(img, reference=rotated)  # the object on the rotated grid
    back2 = to_array(resample(moved, reference=img))
    body = to_array(foreground_mask(img)) > 0
    r = np.hypot(*np.meshgrid(np.arange(64) - 31.5, np.arange(64) - 31.5))
    core = body & (r < 28)[None]
    assert np.corrcoef(back2[core], arr[core])[0, 1] > 0.99


def test_mask_volume_and_labels_preserved():
    _, mask = _phantom()
    mvol = float(to_array(mask).sum()) * np.prod(SPACING)
    a, b, c = LESION[1]
    assert abs(mvol - 4 / 3 * np.pi * a * b * c) / mvol < 0.05  # the sampled ellipsoid itself
    for spacing in [(0.5, 0.5, 3.0), (0.7, 0.7, 1.5), (1.5, 1.5, 2.0)]:
        out = to_array(resample_mask(mask, spacing))
        vol = float(out.sum()) * np.prod(spacing)
        # the 0.5 iso-surface moves the boundary by at most about half the coarser voxel on average,
        # so |dV| <= ellipsoid surface area (Knud Thomsen) x half of the mean coarser voxel edge
        pw = 1.6075
        area = 4 * np.pi * (((a * b) ** pw + (a * c) ** pw + (b * c) ** pw) / 3) ** (1 / pw)
        h = np.mean(np.maximum(SPACING, spacing)) / 2
        assert abs(vol - mvol) <= area * h, (spacing, vol, mvol)
    labels = to_array(mask).astype(np.uint8) * 7
    labels[10, 5:8, 5:8] = 3
    lab_img = to_image(labels, SPACING, origin=_origin())
    for method in ("linear_argmax", "nearest"):
        out = to_array(resample_mask(lab_img, (0.5, 0.5, 3.0), method=method))
        assert sorted(np.unique(out).tolist()) == [0, 3, 7]
        assert out.dtype == np.uint8


def test_small_lesion_survives_downsampling():
    m = np.zeros(SHAPE, np.uint8)
    m[9, 30, 30] = 2  # one voxel, smaller than half an output voxel
    mask = to_image(m, SPACING)
    out = to_array(resample_mask(mask, (3.0, 3.0, 6.0)))
    assert sorted(np.unique(out).tolist()) == [0, 2]
    assert 1 <= (out == 2).sum() <= 4
    dropped = to_array(resample_mask(mask, (3.0, 3.0, 6.0), keep_small=False))
    assert not dropped.any()


def test_mask_rejects_fractional_values():
    with pytest.raises(InputError, match="integer label"):
        resample_mask(to_image(np.full((4, 4, 4), 0.5, np.float32), (1, 1, 1)))


# --------------------------------------------------------------------------- intensity


def test_foreground_and_normalise_zscore():
    img, _ = _phantom()
    fg = foreground_mask(img)
    body = to_array(fg) > 0
    expected = _ellipsoid(_points(), (0, 0, 0), (28, 22, 24)) > 0.5
    assert (body ^ expected).sum() / expected.sum() < 0.03
    out = to_array(normalise(img, fg))
    assert abs(float(out[body].mean())) < 1e-5
    assert abs(float(out[body].std()) - 1) < 1e-5
    # the clip bounds every voxel by the foreground percentiles
    raw = to_array(img)[body]
    lo, hi = np.percentile(raw, [0.5, 99.5])
    z = (np.clip(raw, lo, hi) - np.clip(raw, lo, hi).mean()) / np.clip(raw, lo, hi).std()
    assert out.max() <= z.max() + 1e-4


def test_normalise_rejects_constant_and_nan():
    flat = to_image(np.full((4, 8, 8), 3.0, np.float32), (1, 1, 1))
    with pytest.raises(InputError, match="varying"):
        normalise(flat, to_image(np.ones((4, 8, 8), np.uint8), (1, 1, 1)))
    a = np.ones((4, 8, 8), np.float32)
    a[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="1 NaN"):
        normalise(to_image(a, (1, 1, 1)))
    img, _ = _phantom()
    with pytest.raises(InputError, match="grid"):
        normalise(img, to_image(np.ones((4, 8, 8), np.uint8), (1, 1, 1)))


def test_n4_reduces_a_multiplicative_bias():
    p = _points()
    body = _ellipsoid(p, (0, 0, 0), (28, 22, 24)) > 0.5
    bias = np.exp(0.3 * p[..., 0] / 30).astype(np.float32)
    img = to_image((np.where(body, 100.0, 1.0) * bias).astype(np.float32), SPACING, origin=_origin())
    fg = to_image(body.astype(np.uint8), SPACING, origin=_origin())
    out = to_array(n4(img, fg, shrink=2, iterations=(50, 50)))
    cv_before = to_array(img)[body].std() / to_array(img)[body].mean()
    cv_after = out[body].std() / out[body].mean()
    assert cv_after < 0.5 * cv_before


def test_fill_nonfinite():
    a = np.ones((3, 4, 4), np.float32) * 5
    a[0, 0, 0], a[1, 1, 1], a[2, 2, 2] = np.nan, np.inf, 2.0
    out, n = fill_nonfinite(to_image(a, (1, 1, 1)))
    assert n == 2
    assert to_array(out)[0, 0, 0] == 2.0 and np.isfinite(to_array(out)).all()
    with pytest.raises(InputError, match="all 4 voxels"):
        fill_nonfinite(to_image(np.full((1, 2, 2), np.nan, np.float32), (1, 1, 1)))


# --------------------------------------------------------------------------- registration


def _moved(angle_deg: float, shift_mm) -> tuple[sitk.Image, sitk.Euler3DTransform]:
    """The phantom moved by T(x) = R x + t (about the grid centre, the physical origin 0)."""
    ang = math.radians(angle_deg)
    rot = np.array([[math.cos(ang), -math.sin(ang), 0], [math.sin(ang), math.cos(ang), 0], [0, 0, 1]])
    q = (_points() - np.asarray(shift_mm)) @ rot  # T^-1(p) = R^T (p - t), row-vector form
    true = sitk.Euler3DTransform()
    true.SetRotation(0, 0, ang)
    true.SetTranslation(tuple(float(v) for v in shift_mm))
    return to_image(_phantom_at(q), SPACING, origin=_origin()), true


def test_registration_recovers_known_rigid_motion():
    fixed, _ = _phantom()
    moving, true = _moved(5.0, (3.0, 0.0, 0.0))
    t, res, rep = register_rigid(fixed, moving)
    assert rep["success"], rep
    # Mattes MI is negative, lower is better
    assert rep["metric_after"] < rep["metric_before"] < 0
    assert rep["iterations"] > 0
    assert abs(rep["rotation_deg"][2] - 5.0) < 1.0
    assert max(abs(rep["rotation_deg"][0]), abs(rep["rotation_deg"][1])) < 1.0
    # every point of the body lands within 0.5 mm of where the true motion puts it
    for p in [(0, 0, 0), (25, 20, 25), (-25, 20, -25), (25, -20, 0), (*LESION[0],)]:
        err = np.linalg.norm(np.subtract(t.TransformPoint(p), true.TransformPoint(p)))
        assert err < 0.5, (p, err)
    body = to_array(foreground_mask(fixed)) > 0
    assert np.corrcoef(to_array(res)[body], to_array(fixed)[body])[0, 1] > 0.99
    _, _, again = register_rigid(fixed, moving)
    assert again["translation_mm"] == rep["translation_mm"]  # seeded sampling: replayable


def test_registration_does_not_depend_on_the_thread_count():
    # the same seed must give the same transform whatever SimpleITK's default thread count (both
    # sides run on this machine, so the comparison is exact)
    fixed, _ = _phantom()
    moving, _ = _moved(5.0, (3.0, 0.0, 0.0))
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    reps = []
    try:
        for n in (1, 2, 4):
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
            reps.append(register_rigid(fixed, moving)[2])
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)
    for r in reps[1:]:
        assert r["translation_mm"] == reps[0]["translation_mm"] and r["rotation_deg"] == reps[0]["rotation_deg"]


def test_registration_failure_is_a_flag_not_an_exception():
    fixed, _ = _phantom()
    empty = sitk.Image(fixed.GetSize(), sitk.sitkFloat32)
    empty.CopyInformation(fixed)
    t, res, rep = register_rigid(fixed, empty)
    assert not rep["success"] and "constant" in rep["reason"]
    assert rep["metric_before"] is None and res.GetSize() == fixed.GetSize()
    moving, _ = _moved(5.0, (3.0, 0.0, 0.0))
    t, res, rep = register_rigid(fixed, moving, iterations=0)
    assert not rep["success"] and rep["iterations"] == 0
    assert rep["metric_after"] == rep["metric_before"]
    assert t.GetTranslation() == (0.0, 0.0, 0.0)


# --------------------------------------------------------------------------- whole case


def test_prepare_case_grid_registration_and_normalisation():
    t2, mask = _phantom()
    t1, _ = _moved(4.0, (2.0, -1.0, 0.0))
    adc = sitk.Image(t2) * 0.5 + 10  # already aligned
    case = prepare_case({"t1": t1, "t2": t2, "adc": adc}, mask, spacing=(1.0, 1.0, 3.0))
    assert isinstance(case, PreparedCase)
    assert case.reference == "t2" and list(case.volumes) == ["t1", "t2", "adc"]
    assert set(case.registration) == {"t1", "adc"}
    assert case.flags == (), case.flags
    assert all(v.GetSize() == t2.GetSize() for v in case.volumes.values())
    body = to_array(foreground_mask(t2)) > 0
    for vol in case.volumes.values():
        a = to_array(vol)[body]
        assert abs(a.mean()) < 1e-4 and abs(a.std() - 1) < 1e-4
    t1n, t2n = to_array(case.volumes["t1"])[body], to_array(case.volumes["t2"])[body]
    assert np.corrcoef(t1n, t2n)[0, 1] > 0.99
    assert to_array(case.mask).sum() == to_array(mask).sum()
    assert case.timings["total"] >= case.timings["register"] > 0


def test_prepare_case_flags():
    t2, mask = _phantom()
    empty = sitk.Image(mask)
    empty *= 0
    case = prepare_case({"t2": t2}, empty, spacing=(2.0, 2.0, 3.0))
    assert "empty_mask" in case.flags
    edge = to_array(mask).copy()
    edge[:, :, :3] = 1  # lesion reaching the x = 0 face
    case = prepare_case({"t2": t2}, edge, spacing=(2.0, 2.0, 3.0))
    assert case.flags == ("lesion_touches_edge",)
    t1, _ = _moved(5.0, (3.0, 0.0, 0.0))
    case = prepare_case({"t2": t2, "t1": t1}, mask, spacing=(2.0, 2.0, 3.0), registration={"iterations": 0})
    assert case.flags == ("registration_failed:t1",)
    assert case.volumes["t1"].GetSize() == case.volumes["t2"].GetSize()


def test_prepare_case_nan_voxels_are_filled_and_flagged():
    t2, mask = _phantom()
    a = to_array(t2)
    a[5, 10:12, 10:12] = np.nan
    bad = to_image(a, SPACING, origin=_origin())
    case = prepare_case({"t2": t2, "dwi": bad}, mask, spacing=(2.0, 2.0, 3.0), register=False)
    assert case.flags == ("nan_voxels:dwi",)
    assert case.nonfinite == {"dwi": 4}
    assert all(np.isfinite(to_array(v)).all() for v in case.volumes.values())


def test_prepare_case_rejects_bad_mask_geometry():
    t2, mask = _phantom()
    with pytest.raises(InputError, match="shape"):
        prepare_case({"t2": t2}, np.zeros((5, 5, 5), np.uint8))
    far = sitk.Image(mask)
    far.SetOrigin((500.0, 0.0, 0.0))
    with pytest.raises(InputError, match="overlapping"):
        prepare_case({"t2": t2}, far)
    with pytest.raises(InputError, match="to_image"):
        prepare_case({"t2": to_array(t2)}, mask)
    with pytest.raises(InputError, match="reference"):
        prepare_case({"t2": t2}, mask, reference="t1")
