"""Reading and checking an upload: the score form's fields and the file, before the model sees it.

* :func:`read_form`: the form (``file``, ``clinical``, ``frame``) -> the file's bytes and the checked
  values: 400 without a file or with an empty one, 400/413/422 for bad clinical values, 422 for a
  bad frame index;
* :func:`parse_clinical`, :func:`parse_frame`: the two small form fields;
* :func:`read_upload`: the bytes -> a :class:`~usher2.types.Frame`, read by the project's readers
  from a private temporary file: 415 for content that is not a frame (or a video), 413 for a header
  over the decoded-size limit (:mod:`usher2.io.limits`, checked before decoding), 422 for a file
  that cannot be read.

Messages name the field and the kind of value that arrived, never the value or the filename.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import UploadFile

from usher2.fusion.clinical import check_clinical
from usher2.io.errors import InputError
from usher2.io.limits import DecodedSizeError, PixelLimits
from usher2.service.api_errors import ApiError

__all__ = [
    "DICOM_SUFFIXES",
    "DICOM_TYPES",
    "FORMATS",
    "MAX_CLINICAL_CHARS",
    "parse_clinical",
    "parse_frame",
    "read_form",
    "read_upload",
]

DICOM_TYPES = ("application/dicom", "application/dicom+binary")
"""Content types that mark an upload as DICOM (one without its preamble is recognised by them)."""
DICOM_SUFFIXES = (".dcm", ".dicom")
"""Filename suffixes that mark an upload as DICOM."""
FORMATS = "a PNG, JPEG, TIFF or BMP image or a DICOM file"
"""The accepted files, as error messages name them."""
MAX_CLINICAL_CHARS = 4096
"""Longest ``clinical`` form field: a flat object of a few numbers is far shorter."""


def _json_kind(value: Any) -> str:
    """The JSON type of a value, for messages (values themselves are never echoed)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def parse_clinical(text: str | None, columns: list[str]) -> dict[str, float | None] | None:
    """Check the ``clinical`` form field: a JSON object of the model's clinical columns.

    Values are numbers, or null for a missing value (the model imputes it and the response
    flags ``clinical_missing``); a column left out is missing too. Messages name the key and
    the JSON type that arrived, never the value.

    Args:
        text: The field as sent (None or blank: no clinical values).
        columns: The model's clinical columns.

    Returns:
        ``{column: float | None}``, or None when nothing was sent.

    Raises:
        ApiError: 400 for invalid JSON; 422 for a non-object, an unknown key, or a value that is
            not a finite number or null.

    Example:
        >>> parse_clinical('{"age": 54, "er": null}', ["age", "er", "grade"])
        {'age': 54.0, 'er': None}
        >>> try:
        ...     parse_clinical('{"age": "54"}', ["age"])
        ... except ApiError as exc:
        ...     print(exc.status_code, exc.detail)
        422 clinical.age: expected a number or null, got a string
    """
    if text is None or not text.strip():
        return None
    example = '{"' + (columns[0] if columns else "age") + '": 54}'
    if len(text) > MAX_CLINICAL_CHARS:
        raise ApiError(
            413, "clinical", f"a JSON object of at most {MAX_CLINICAL_CHARS} characters", f"{len(text)} characters"
        )
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, "clinical", f"a JSON object such as {example}", f"invalid JSON ({exc.msg} at character {exc.pos})"
        ) from exc
    except RecursionError as exc:  # deeply nested arrays/objects: json's recursive parser gives up
        raise ApiError(400, "clinical", f"a flat JSON object such as {example}", "deeply nested JSON") from exc
    if not isinstance(obj, dict):
        raise ApiError(422, "clinical", f"a JSON object such as {example}", _json_kind(obj))
    out: dict[str, float | None] = {}
    for key, value in obj.items():
        if key not in columns:
            shown = key if len(key) <= 40 else key[:40] + "..."
            raise ApiError(
                422,
                "clinical",
                f"keys among the model's clinical columns ({', '.join(columns) or 'none'})",
                f"the unknown key {shown!r}",
            )
        if value is None:
            out[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            fix = "send 0/1 for yes/no" if isinstance(value, bool) else None
            raise ApiError(422, f"clinical.{key}", "a number or null", _json_kind(value), fix=fix)
        if not math.isfinite(value):
            raise ApiError(422, f"clinical.{key}", "a finite number or null", "NaN or infinity")
        out[key] = float(value)
    return out


def parse_frame(text: str | None) -> int:
    """Check the ``frame`` form field: a frame index >= 0 (None or blank: 0).

    Raises:
        ApiError: 422 for anything but an integer >= 0.

    Example:
        >>> parse_frame(None), parse_frame(" 3 ")
        (0, 3)
        >>> try:
        ...     parse_frame("-1")
        ... except ApiError as exc:
        ...     print(exc.status_code, exc.detail)
        422 frame: expected a frame index: an integer >= 0, got '-1'
    """
    if text is None or not text.strip():
        return 0
    try:
        index = int(text.strip())
    except ValueError:
        index = -1
    if index < 0:
        raise ApiError(422, "frame", "a frame index: an integer >= 0", f"{text.strip()[:20]!r}")
    return index


async def read_form(
    file: UploadFile | None,
    clinical: str | None,
    frame: str | None,
    *,
    columns: list[str],
    ranges: Mapping[str, Mapping[str, float]],
) -> tuple[bytes, int, dict[str, float | None] | None, bool]:
    """Check the score form: the file's bytes, the frame index, the clinical values and whether it is DICOM.

    Args:
        file: The ``file`` part (None when the form has none).
        clinical: The ``clinical`` field as sent.
        frame: The ``frame`` field as sent.
        columns: The model's clinical columns.
        ranges: The bundle's training ranges of the clinical columns.

    Raises:
        ApiError: 400 without a file or with an empty one; 400, 413 or 422 for bad clinical values
            (:func:`parse_clinical`, then the bundle's training ranges); 422 for a bad frame index.
    """
    if file is None:
        raise ApiError(400, "file", f"a multipart/form-data field 'file' with {FORMATS}", "no file field")
    data = await file.read()
    if not data:
        raise ApiError(400, "file", f"a non-empty file ({FORMATS})", "0 bytes")
    values = parse_clinical(clinical, columns)
    if values is not None:
        try:  # the bundle's training ranges: far outside is refused here, before the frame is read
            check_clinical(values, columns, ranges)
        except InputError as exc:
            raise ApiError(422, exc.where, exc.expected, exc.got, fix=exc.fix) from exc
    index = parse_frame(frame)
    name = (file.filename or "").lower()  # only its suffix is looked at; it is never logged or echoed
    dicom_hint = (file.content_type or "").lower() in DICOM_TYPES or name.endswith(DICOM_SUFFIXES)
    await file.close()
    return data, index, values, dicom_hint


def read_upload(data: bytes, index: int, dicom_hint: bool, limits: PixelLimits) -> Any:
    """The upload as a :class:`~usher2.types.Frame`, read by the project's readers from a private temp file.

    Args:
        data: The file's bytes.
        index: Frame index of a multi-frame file.
        dicom_hint: Whether the content type or filename said DICOM (a DICOM file without its
            preamble is recognised only so).
        limits: Decoded-size limits, checked from the file's header before decoding.

    Raises:
        ApiError: 415 for content that is neither an image nor DICOM, or a video; 413 for a header
            over ``limits``; 422 for a file that cannot be read or a frame index out of range.
    """
    from usher2.io.frames import frame_kind, read_frame

    with tempfile.TemporaryDirectory(prefix="usher2-upload-") as tmp:
        # Only a DICOM file without its 128-byte preamble needs the suffix; everything else is
        # recognised by content. The client's filename is never used as a path.
        path = Path(tmp) / ("upload.dcm" if dicom_hint else "upload")
        path.write_bytes(data)
        try:
            kind = frame_kind(path)
        except InputError as exc:
            raise ApiError(
                415,
                "file",
                FORMATS,
                f"unrecognised content ({len(data)} bytes)",
                fix="send a DICOM file without its preamble as application/dicom or with a .dcm name",
            ) from exc
        if kind == "video":
            raise ApiError(415, "file", f"{FORMATS} (one frame)", "a video", fix="score videos with `usher2 score`")
        try:
            return read_frame(path, index, limits=limits)
        except DecodedSizeError as exc:  # refused from the header, before decoding
            got = exc.got.replace(str(path), "the upload")
            fix = "downscale the frame (the server's limit is usher2 serve --max-megapixels)"
            raise ApiError(413, "file", exc.expected, got, fix=fix) from exc
        except InputError as exc:
            field = "frame" if "frame index" in exc.expected else "file"
            got = exc.got.replace(str(path), "the upload")
            raise ApiError(422, field, exc.expected, got, fix=exc.fix) from exc
