"""Perturbations of a case's frame and mask: the rows of the perturbation table.

The long table (``case_id``, ``perturbation``, features; written by
:func:`~usher2.features.cohort.extract_cohort` with ``perturb=True``) is read by the fusion
core's ICC filter. Perturbations: ``original``; ``erode1``/``erode2``/``dilate1``/``dilate2``
(mask by 1-2 px, elliptical element; the frame's edge is not a contour, so a mask does not erode
from it); ``rotate-5``/``rotate+5`` (frame and mask rotated by 5 degrees about the lesion centre,
linear/nearest interpolation); ``shift-2``/``shift+2`` (the mask moved 2 px along both axes
relative to the frame: contour placement); ``enhancer_on`` or ``enhancer_off`` (the opposite of
the run's setting; ``on`` uses the default enhancer, pix2pix); and ``mask_predicted`` or
``mask_given`` (the opposite mask source, when the case has a given mask).
``ExtractConfig.perturbations`` picks a subset (``enhancer`` and ``mask`` name the two toggles)
and adds ``contour-<k>`` (k = 1, 2, ...): the k-th draw of a realistic segmentation error
(:func:`contour_error`, seeded by the case id and k, :func:`contour_seed`), the rows a fit
augments its training data with (``usher2 fit --augment``). A perturbation that cannot be
computed (e.g. a 1-pixel mask cannot be eroded) is a failure of stage ``perturbation:<name>``.

* :func:`perturbation_rows`: the perturbation rows and failures of a chunk's cases;
* :func:`contour_error`, :func:`contour_seed`: the contour redraws (:data:`CONTOUR_ERROR`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from usher2.features.config import AREA_COLUMNS, GEOMETRIC_PERTURBATIONS, ExtractConfig
from usher2.features.regions import disk
from usher2.io.errors import InputError

__all__ = ["CONTOUR_ERROR", "contour_error", "contour_seed", "perturbation_rows"]

#: The segmentation-error model of :func:`contour_error`, in units of the lesion's equivalent radius
#: R = sqrt(area / pi): ``offset`` sd of a uniform grow/shrink of the contour, ``noise`` sd of a
#: smooth local in/out displacement whose correlation length is ``correlation`` R, ``shift`` sd of a
#: displacement of the whole contour along each axis. At these values the perturbed mask's Dice with
#: the original has a mean of 0.80 (median 0.83, 10th percentile 0.70; 200 BUS-BRA GE masks), the
#: scale of a segmenter's errors on frames it did not see: the shipped U-Net's cross-validated Dice
#: is 0.81 on those devices (it falls to 0.66-0.71 on the others). Chosen from that card, before any
#: held-out-device result was looked at.
CONTOUR_ERROR = {"offset": 0.12, "noise": 0.15, "correlation": 0.5, "shift": 0.08}


def _perturbed(pixels: np.ndarray, mask: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A geometric perturbation of (frame, mask); raises InputError when the mask vanishes."""
    m8 = mask.astype(np.uint8)
    if name.startswith(("erode", "dilate")):
        r = int(name[-1])
        op = cv2.erode if name.startswith("erode") else cv2.dilate
        out_p, out_m = pixels, op(m8, disk(r)) > 0
    elif name.startswith("rotate"):
        ys, xs = np.nonzero(mask)
        centre = (float(xs.mean()), float(ys.mean()))
        rot = cv2.getRotationMatrix2D(centre, float(name[len("rotate") :]), 1.0)
        h, w = mask.shape
        out_p = cv2.warpAffine(pixels, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        out_m = cv2.warpAffine(m8, rot, (w, h), flags=cv2.INTER_NEAREST, borderValue=0) > 0
    elif name.startswith("shift"):
        d = int(name[len("shift") :])
        move = np.float32([[1, 0, d], [0, 1, d]])
        out_p = pixels
        out_m = cv2.warpAffine(m8, move, (mask.shape[1], mask.shape[0]), flags=cv2.INTER_NEAREST, borderValue=0) > 0
    else:  # pragma: no cover - the names are ours
        raise ValueError(f"unknown perturbation {name!r}")
    if not out_m.any():
        raise InputError("mask", f"a region that survives {name}", "an empty mask afterwards")
    return out_p.astype(np.float32, copy=False), out_m


def contour_seed(case_id: str, name: str) -> int:
    """The seed of a case's ``contour-<k>`` draw: stable across runs, processes and machines."""
    return int.from_bytes(hashlib.sha256(f"{case_id}|{name}".encode()).digest()[:8], "little")


def contour_error(
    mask: np.ndarray,
    rng: np.random.Generator | int,
    *,
    offset: float = CONTOUR_ERROR["offset"],
    noise: float = CONTOUR_ERROR["noise"],
    correlation: float = CONTOUR_ERROR["correlation"],
    shift: float = CONTOUR_ERROR["shift"],
) -> np.ndarray:
    """A lesion mask as a segmenter might have drawn it: the contour grown or shrunk, bent locally and moved.

    The signed distance to the contour (positive inside) is moved by a random shift, then a random
    constant (grow/shrink) and a smooth random field (local bulges and dents) are added to it; the
    perturbed mask is where it stays positive (holes filled, largest component). Every amplitude is
    a multiple of the lesion's equivalent radius R, so a 20-px and a 200-px lesion get the same
    relative error (see :data:`CONTOUR_ERROR` for the defaults and the Dice they give).

    Args:
        mask: ``(H, W)`` bool lesion mask.
        rng: A generator or a seed (:func:`contour_seed` makes one per case and draw).
        offset, noise, correlation, shift: The error model, in units of R (see :data:`CONTOUR_ERROR`).

    Returns:
        ``(H, W)`` bool perturbed mask.

    Raises:
        InputError: An empty mask, or one the draw erased (fewer than 4 pixels left).

    Example:
        >>> m = np.zeros((120, 120), bool); m[30:90, 20:100] = True
        >>> out = contour_error(m, 0)
        >>> d = 2 * int((out & m).sum()) / int(out.sum() + m.sum())
        >>> 0.6 < d < 1.0, contour_error(m, 0).tolist() == out.tolist()
        (True, True)
    """
    from scipy import ndimage

    rng = np.random.default_rng(rng)
    m = np.asarray(mask, bool)
    area = int(m.sum())
    if area == 0:
        raise InputError("mask", "a non-empty lesion mask to perturb", "an empty mask")
    r = float(np.sqrt(area / np.pi))
    h, w = m.shape
    m8 = m.astype(np.uint8)
    sd = cv2.distanceTransform(m8, cv2.DIST_L2, 5) - cv2.distanceTransform(1 - m8, cv2.DIST_L2, 5)
    dy, dx = rng.normal(0.0, shift * r, 2)
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    sd = cv2.warpAffine(sd.astype(np.float32), move, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    field = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=max(1.0, correlation * r), mode="reflect")
    field /= max(float(field.std()), 1e-12)
    level = sd + rng.normal(0.0, offset * r) + noise * r * field
    out = ndimage.binary_fill_holes(level > 0)
    labels, n = ndimage.label(out, structure=np.ones((3, 3), bool))
    if n > 1:
        out = labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)
    if int(out.sum()) < 4:
        raise InputError("mask", "a region that survives the contour error", f"{int(out.sum())} pixels afterwards")
    return np.asarray(out, bool)


def perturbation_rows(
    cfg: ExtractConfig,
    good: list[tuple[dict[str, Any], dict[str, Any], dict[str, float]]],
    features: Callable[[ExtractConfig, list[tuple[np.ndarray, np.ndarray, Any]]], list[Any]],
    prepare: Callable[[ExtractConfig, dict[str, Any], str | None, str], dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The perturbation rows of a chunk's cases, and the perturbations that could not be computed.

    Args:
        cfg: The settings (:meth:`~usher2.features.config.ExtractConfig.perturbation_names`, and the
            enhancer and mask source the two toggles flip).
        good: ``(case, prepared, features)`` per case that has a row: its manifest row, the prepared
            frame (``pixels``, ``mask``, ``spacing``, ``has_given``) and its feature row.
        features: :func:`~usher2.features.extract.frame_features` (passed in: the frame level
            imports this module).
        prepare: ``prepare(cfg, case, enhancer, masks)``: the case read, cleaned, enhanced and masked
            with another enhancer or mask source (the toggles).

    Returns:
        ``(rows, failures)``: ``case_id``, ``perturbation`` and the features (no region areas) per
        row, the ``original`` rows first; ``case_id``, ``stage`` (``perturbation:<name>``), ``error``
        per failure.
    """
    rows = [{"case_id": c["case_id"], "perturbation": "original", **f} for c, _, f in good]
    failures: list[dict[str, Any]] = []
    jobs: dict[str, list[tuple[str, np.ndarray, np.ndarray, Any]]] = {}
    enh_name, enh = ("enhancer_off", None) if cfg.enhancer else ("enhancer_on", "pix2pix")
    mask_name = "mask_given" if cfg.masks == "predicted" else "mask_predicted"
    chosen = cfg.perturbation_names()
    for case, p, _ in good:
        cid = case["case_id"]
        for name in chosen:
            if name in ("enhancer", "mask"):
                continue
            try:
                if name in GEOMETRIC_PERTURBATIONS:
                    px, m = _perturbed(p["pixels"], p["mask"], name)
                else:  # contour-<k>: the pixels stay, the mask is redrawn
                    px, m = p["pixels"], contour_error(p["mask"], contour_seed(cid, name))
                jobs.setdefault(name, []).append((cid, px, m, p["spacing"]))
            except InputError as exc:
                failures.append({"case_id": cid, "stage": f"perturbation:{name}", "error": f"InputError: {exc}"})
        toggles = [(enh_name, enh, cfg.masks)] if "enhancer" in chosen else []
        if "mask" in chosen and (cfg.masks == "given" or p["has_given"]):
            toggles.append((mask_name, cfg.enhancer, "predicted" if cfg.masks == "given" else "given"))
        for name, enhancer, masks in toggles:
            try:
                q = prepare(cfg, case, enhancer, masks)
                jobs.setdefault(name, []).append((cid, q["pixels"], q["mask"], q["spacing"]))
            except (InputError, ValueError, OSError) as exc:
                failures.append(
                    {"case_id": cid, "stage": f"perturbation:{name}", "error": f"{type(exc).__name__}: {exc}"}
                )
    for name, items in jobs.items():
        feats = features(cfg, [(px, m, sp) for _, px, m, sp in items])
        for (cid, *_), f in zip(items, feats, strict=True):
            if isinstance(f, Exception):
                failures.append({"case_id": cid, "stage": f"perturbation:{name}", "error": f"{type(f).__name__}: {f}"})
            else:
                rows.append(
                    {"case_id": cid, "perturbation": name, **{k: v for k, v in f.items() if k not in AREA_COLUMNS}}
                )
    return rows, failures
