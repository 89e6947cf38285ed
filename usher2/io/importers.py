"""Build manifests from the folder layouts of public breast-ultrasound datasets.

* **BUS-BRA** (Gómez-Flores et al., Med Phys 2024): ``Images/bus_NNNN-{l,r}.png``,
  ``Masks/mask_NNNN-{l,r}.png``, ``bus_data.csv`` and ``5-fold-cv.csv``. Real patient ids
  (``Case``) and the official patient-grouped 5-fold partition (``fold``).
* **BUSI** (Al-Dhabyani et al., Data in Brief 2020): class folders ``benign/``, ``malignant/``
  and ``normal/`` holding ``name.png`` with ``name_mask.png``, ``name_mask_1.png``, ...; the
  split masks are merged (logical OR) into one 0/255 PNG written beside the manifest under
  ``busi_masks/<class>/<name>.png``. **Caveat:** BUSI has no patient ids, and a patient can
  have several frames, so ``patient_id = case_id`` and any split of BUSI may put one patient's
  frames on both sides (optimistic, leaked estimates). Say so when reporting BUSI results.

Both write the manifest atomically (CSV or Parquet by ``out``'s suffix) with paths relative
to ``out``'s directory, and return it as :func:`~usher2.io.manifest.read_manifest` reads it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from usher2.io.atomic import atomic_write_bytes
from usher2.io.errors import InputError
from usher2.io.frames import read_mask
from usher2.io.limits import resolve_limits
from usher2.io.manifest import SUFFIXES, read_manifest, write_manifest

BUS_BRA_FILES = ("bus_data.csv", "5-fold-cv.csv", "Images", "Masks")
BUSI_CLASSES = ("benign", "malignant", "normal")
BUSI_LABELS: dict[str, int | None] = {"benign": 0, "malignant": 1, "normal": None}


def _rel(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), out_dir)).as_posix()


def _out_dir(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise InputError(out, "a manifest path ending in .csv or .parquet", f"suffix {out.suffix or '(none)'!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent.resolve()


def _list_problems(where: Path, expected: str, items: list[str], fix: str | None = None) -> InputError:
    shown = "; ".join(items[:10]) + (f"; ... ({len(items) - 10} more)" if len(items) > 10 else "")
    return InputError(where, expected, f"{len(items)} problem(s): {shown}", fix=fix)


def import_bus_bra(root: str | Path, out: str | Path) -> pd.DataFrame:
    """Write a manifest for BUS-BRA and return it.

    Columns: ``case_id`` (the BUS-BRA ID, e.g. ``bus_0001-l``), ``patient_id`` (``Case``),
    ``image``, ``mask``, ``label`` (1 = malignant, 0 = benign), ``fold`` (official 5-fold
    partition, 1..5), ``birads``, ``device``, ``side``, ``histology``, ``pathology``.

    Args:
        root: The BUS-BRA folder.
        out: The manifest to write (``.csv`` or ``.parquet``).

    Returns:
        The manifest as :func:`~usher2.io.manifest.read_manifest` returns it.

    Raises:
        InputError: The layout is not BUS-BRA (the missing file is named), an ID lacks a fold,
            the two CSVs disagree on pathology, or an image/mask is missing.

    Example:
        >>> df = import_bus_bra("../shared/data/bus-bra", "/tmp/bus_bra.csv")  # doctest: +SKIP
        >>> len(df), df["patient_id"].nunique()  # doctest: +SKIP
        (1875, 1064)
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "the BUS-BRA folder", "no such directory")
    for name in BUS_BRA_FILES:
        if not (root / name).exists():
            raise InputError(
                root,
                f"the BUS-BRA layout ({', '.join(BUS_BRA_FILES)})",
                f"no {name} in it",
                fix="point ROOT at the folder that holds bus_data.csv",
            )
    out_dir = _out_dir(out)
    data = pd.read_csv(root / "bus_data.csv", dtype={"ID": str})
    folds = pd.read_csv(root / "5-fold-cv.csv", dtype={"ID": str})
    for frame, name, cols in (
        (data, "bus_data.csv", ("ID", "Case", "Histology", "Pathology", "BIRADS", "Device", "Side")),
        (folds, "5-fold-cv.csv", ("ID", "Pathology", "kFold")),
    ):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise InputError(root / name, f"columns {list(cols)}", f"missing {missing}")
    merged = data.merge(folds[["ID", "kFold", "Pathology"]], on="ID", how="left", suffixes=("", "_cv"))
    problems: list[str] = []
    for row in merged.itertuples(index=False):
        image, mask = (
            root / "Images" / f"{row.ID}.png",
            root / "Masks" / f"{row.ID.replace('bus_', 'mask_', 1)}.png",
        )
        if pd.isna(row.kFold):
            problems.append(f"{row.ID}: no fold in 5-fold-cv.csv")
        elif row.Pathology != row.Pathology_cv:
            problems.append(f"{row.ID}: pathology {row.Pathology!r} vs {row.Pathology_cv!r} in 5-fold-cv.csv")
        if row.Pathology not in ("benign", "malignant"):
            problems.append(f"{row.ID}: pathology {row.Pathology!r} is neither benign nor malignant")
        for f in (image, mask):
            if not f.is_file():
                problems.append(f"{row.ID}: missing {f.relative_to(root)}")
    if problems:
        raise _list_problems(root, "a complete BUS-BRA folder", problems)
    df = pd.DataFrame(
        {
            "case_id": merged["ID"],
            "patient_id": merged["Case"].astype(str),
            "image": [_rel(root / "Images" / f"{i}.png", out_dir) for i in merged["ID"]],
            "mask": [_rel(root / "Masks" / f"{i.replace('bus_', 'mask_', 1)}.png", out_dir) for i in merged["ID"]],
            "label": (merged["Pathology"] == "malignant").astype(int),
            "fold": merged["kFold"].astype(int),
            "birads": merged["BIRADS"],
            "device": merged["Device"],
            "side": merged["Side"],
            "histology": merged["Histology"],
            "pathology": merged["Pathology"],
        }
    )
    write_manifest(df, out)
    return read_manifest(out, check_files=False)


_MASK_RE = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<k>\d+))?$")


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").lower()


def _read_grey_shape(path: Path) -> tuple[int, int]:
    """(rows, columns) from the image's header, without decoding it, within the decoded-size limit."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            cols, rows = im.size
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise InputError(path, "a PNG image Pillow can read", "a corrupt or empty file") from exc
    resolve_limits(None).check_frame(path, rows, cols)
    return int(rows), int(cols)


def _busi_classes(root: Path) -> list[str]:
    """The BUSI class folders present under ``root``, or ``InputError`` for a wrong layout."""
    if not root.is_dir():
        raise InputError(root, "the BUSI folder", "no such directory")
    present = [c for c in BUSI_CLASSES if (root / c).is_dir()]
    if not present:
        raise InputError(
            root,
            "the BUSI layout: class folders benign/, malignant/, normal/",
            f"none of them (found {sorted(p.name for p in root.iterdir())[:10]})",
            fix="point ROOT at Dataset_BUSI_with_GT",
        )
    return present


def _busi_files(folder: Path) -> tuple[list[Path], dict[str, list[Path]]]:
    """A class folder's images, and its masks by image stem, in name order."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    masks: dict[str, list[Path]] = {}
    images: list[Path] = []
    for f in files:
        m = _MASK_RE.match(f.stem)
        if m:
            masks.setdefault(m.group("stem"), []).append(f)
        else:
            images.append(f)
    return images, masks


def _merge_masks(image: Path, parts: list[Path], case_id: str) -> np.ndarray:
    """The logical OR of an image's split masks (``InputError`` for a bad image or mask)."""
    shape = _read_grey_shape(image)
    merged = np.zeros(shape, bool)
    for part in parts:
        merged |= read_mask(part, shape, case=case_id, allow_empty=True)
    return merged


def _write_merged_mask(merged: np.ndarray, mask_path: Path) -> None:
    """Write a merged mask as a 0/255 PNG, atomically."""
    ok, png = cv2.imencode(".png", merged.astype(np.uint8) * 255)
    if not ok:
        raise InputError(mask_path, "a PNG OpenCV can encode", "an encoding failure")
    atomic_write_bytes(mask_path, png.tobytes())


def _busi_row(
    cls: str, image: Path, parts: list[Path], case_id: str, out_dir: Path, problems: list[str]
) -> dict[str, object] | None:
    """One image's manifest row (its merged mask written), or None with its problem appended."""
    rel_name = f"{cls}/{image.name}"
    if not parts:
        problems.append(f"{rel_name}: no mask ({image.stem}_mask.png)")
        return None
    try:
        merged = _merge_masks(image, parts, case_id)
    except InputError as exc:
        problems.append(str(exc))
        return None
    label = BUSI_LABELS[cls]
    mask_rel: str | None = None
    if merged.any():
        mask_path = out_dir / "busi_masks" / cls / f"{image.stem}.png"
        _write_merged_mask(merged, mask_path)
        mask_rel = _rel(mask_path, out_dir)
    elif label is not None:
        problems.append(f"{rel_name}: mask is empty (0 foreground pixels) in case {case_id}")
        return None
    return {
        "case_id": case_id,
        "patient_id": case_id,
        "image": _rel(image, out_dir),
        "mask": mask_rel,
        "label": label,
        "busi_class": cls,
    }


def _busi_class_rows(
    root: Path, cls: str, out_dir: Path, seen: dict[str, str], problems: list[str]
) -> list[dict[str, object]]:
    """The manifest rows of one class folder; problems are appended, case ids recorded in ``seen``."""
    images, masks = _busi_files(root / cls)
    for stray in sorted(set(masks) - {f.stem for f in images}):
        problems.append(f"{cls}/{masks[stray][0].name}: a mask without its image {stray}.png")
    rows: list[dict[str, object]] = []
    for image in images:
        rel_name = f"{cls}/{image.name}"
        slug = _slug(image.stem)
        case_id = slug if slug.startswith(f"{cls}_") else f"{cls}_{slug}"
        if case_id in seen:
            problems.append(f"{rel_name}: case id {case_id!r} clashes with {seen[case_id]}")
            continue
        seen[case_id] = rel_name
        row = _busi_row(cls, image, masks.get(image.stem, []), case_id, out_dir, problems)
        if row is not None:
            rows.append(row)
    return rows


def import_busi(root: str | Path, out: str | Path) -> pd.DataFrame:
    """Write a manifest for BUSI (split masks merged beside it) and return it.

    Columns: ``case_id`` (``<class>_<name>``, unique across classes), ``patient_id``
    (= ``case_id``: BUSI has no patient ids, see the module caveat), ``image``, ``mask``
    (``busi_masks/<class>/<name>.png``; empty for "normal" frames whose merged mask is
    all zero), ``label`` (1 malignant, 0 benign, empty for normal) and ``busi_class``.

    Args:
        root: The BUSI folder holding ``benign/``, ``malignant/`` and ``normal/``.
        out: The manifest to write (``.csv`` or ``.parquet``).

    Returns:
        The manifest as :func:`~usher2.io.manifest.read_manifest` returns it.

    Raises:
        InputError: No class folder, an image without a mask, a mask whose shape differs
            from its image, an empty mask in a benign/malignant frame, or clashing case ids.

    Example:
        >>> df = import_busi("Dataset_BUSI_with_GT", "/tmp/busi/manifest.csv")  # doctest: +SKIP
        >>> sorted(df["busi_class"].unique())  # doctest: +SKIP
        ['benign', 'malignant', 'normal']
    """
    root = Path(root)
    present = _busi_classes(root)
    out_dir = _out_dir(out)
    rows: list[dict[str, object]] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for cls in present:
        rows.extend(_busi_class_rows(root, cls, out_dir, seen, problems))
    if problems:
        raise _list_problems(root, "a complete BUSI folder", problems)
    if not rows:
        raise InputError(root, "BUSI images (*.png) in the class folders", "no images")
    df = pd.DataFrame(rows)
    df["label"] = pd.array(df["label"].tolist(), dtype="Int64")
    write_manifest(df, out)
    return read_manifest(out, check_files=False)
