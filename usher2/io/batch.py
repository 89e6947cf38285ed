"""Read many cases; a bad case is reported as a :class:`~usher2.io.errors.Failure` and skipped."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usher2.io.errors import Failure, InputError
from usher2.io.frames import read_frame, read_mask
from usher2.io.manifest import read_manifest
from usher2.types import Frame


@dataclass(frozen=True, eq=False)
class Case:
    """One manifest row, read.

    Attributes:
        case_id: The manifest's ``case_id``.
        patient_id: The manifest's ``patient_id``.
        frame: The image (frame 0 of a DICOM or video).
        mask: ``(H, W)`` bool lesion mask, or None when the row has none.
        label: 0, 1 or None.
        row: The row's other values (clinical and metadata columns), by column name.
    """

    case_id: str
    patient_id: str
    frame: Frame
    mask: np.ndarray | None
    label: int | None
    row: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchResult:
    """The cases that were read and the ones that failed, each in manifest order."""

    cases: list[Case]
    failures: list[Failure]


def _path(row: Mapping[str, Any], col: str, base: Path | None) -> Path | None:
    resolved = row.get(f"{col}_path")
    if isinstance(resolved, str) and resolved:
        return Path(resolved)
    value = row.get(col)
    if not isinstance(value, str) or not value.strip():
        return None
    p = Path(value.strip())
    return p if p.is_absolute() or base is None else base / p


def read_case(row: Mapping[str, Any], *, base_dir: str | Path | None = None, masks: bool = True) -> Case:
    """Read one manifest row: its frame and, when given, its mask (checked against the frame).

    Args:
        row: A row of a manifest DataFrame, e.g. ``df.iloc[0].to_dict()``.
        base_dir: Directory that relative ``image``/``mask`` values are relative to; not needed
            when the row has ``image_path``/``mask_path`` (as :func:`read_manifest` adds).
        masks: Read the mask too.

    Raises:
        InputError: Any problem with the row's files; the message names the file and the case.

    Example:
        >>> case = read_case({"case_id": "c1", "image": "c1.png"}, base_dir="cohort")  # doctest: +SKIP
    """
    case_id = str(row.get("case_id", "?"))
    base = Path(base_dir) if base_dir is not None else None
    image = _path(row, "image", base)
    if image is None:
        raise InputError(f"case {case_id}", "an image path", "an empty image cell")
    frame = read_frame(image)
    mask_file = _path(row, "mask", base) if masks else None
    mask = read_mask(mask_file, frame.shape, case=case_id) if mask_file is not None else None
    label = row.get("label")
    label = None if label is None or pd.isna(label) else int(label)
    rest = {k: v for k, v in row.items() if k not in ("case_id", "patient_id", "label", "image_path", "mask_path")}
    return Case(
        case_id=case_id,
        patient_id=str(row.get("patient_id", case_id)),
        frame=frame,
        mask=mask,
        label=label,
        row=rest,
    )


def read_cases(
    manifest: pd.DataFrame | str | Path,
    *,
    masks: bool = True,
    base_dir: str | Path | None = None,
    on_case: Callable[[str, bool], None] | None = None,
) -> BatchResult:
    """Read every case of a manifest; bad cases become ``Failure`` records and the rest go on.

    Args:
        manifest: A manifest DataFrame (from :func:`read_manifest`, or any with ``case_id`` and
            ``image``) or the path of a manifest file. A path is read with ``check_files=False``
            so that a missing file fails its own case, not the whole batch.
        masks: Read masks too.
        base_dir: For a DataFrame without ``image_path``: the directory its paths are relative
            to (default: ``df.attrs["manifest_dir"]``, else the working directory).
        on_case: Called as ``on_case(case_id, ok)`` after each case (progress reporting).

    Returns:
        ``BatchResult(cases, failures)``; ``len(cases) + len(failures) == len(manifest)``.

    Raises:
        InputError: Only for the manifest itself (unreadable or invalid), never for a case.

    Example:
        >>> result = read_cases("cohort/manifest.csv")  # doctest: +SKIP
        >>> len(result.cases), [f.case for f in result.failures]  # doctest: +SKIP
        (197, ['c0007', 'c0102', 'c0150'])
    """
    df = read_manifest(manifest, check_files=False) if isinstance(manifest, str | Path) else manifest
    if base_dir is None:
        base_dir = df.attrs.get("manifest_dir")
    cases: list[Case] = []
    failures: list[Failure] = []
    for row in df.to_dict(orient="records"):
        case_id = str(row.get("case_id", "?"))
        try:
            cases.append(read_case(row, base_dir=base_dir, masks=masks))
        except Exception as exc:  # a batch must survive any bad case; it is recorded, not hidden
            failures.append(Failure.from_exception(case_id, exc))
            ok = False
        else:
            ok = True
        if on_case is not None:
            on_case(case_id, ok)
    return BatchResult(cases=cases, failures=failures)
