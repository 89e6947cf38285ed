"""Reading and checking an upload (usher2.service.upload): the form fields, the file and their errors."""

from __future__ import annotations

import asyncio
import io
import json

import cv2
import numpy as np
import pytest
from starlette.datastructures import Headers, UploadFile

from usher2.io.limits import PixelLimits
from usher2.service.api_errors import ApiError
from usher2.service.upload import MAX_CLINICAL_CHARS, parse_clinical, parse_frame, read_form, read_upload

COLUMNS = ["age", "er", "grade"]


def _png(h: int, w: int, value: int = 128) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((h, w), value, np.uint8))
    assert ok
    return buf.tobytes()


def _upload(data: bytes, name: str = "f.png", content_type: str = "application/octet-stream") -> UploadFile:
    return UploadFile(io.BytesIO(data), filename=name, headers=Headers({"content-type": content_type}))


# ------------------------------------------------------------------------------- clinical field
@pytest.mark.parametrize("text", [None, "", "   \n"])
def test_no_clinical_values(text):
    assert parse_clinical(text, COLUMNS) is None


def test_numbers_and_nulls_are_kept_and_left_out_columns_are_missing():
    assert parse_clinical('{"age": 61, "grade": null, "er": 1.5}', COLUMNS) == {"age": 61.0, "grade": None, "er": 1.5}


@pytest.mark.parametrize(
    ("text", "status", "detail"),
    [
        ("{'age': 50}", 400, 'clinical: expected a JSON object such as {"age": 54}, got invalid JSON'),
        ("[" * 100_000, 413, f"at most {MAX_CLINICAL_CHARS} characters, got 100000 characters"),
        ("[" * 4000 + "]" * 4000, 413, "got 8000 characters"),
        ("[" * 2000 + "]" * 2000, 400, "got deeply nested JSON"),
        ("[50, 1, 2]", 422, "got an array"),
        ('"age"', 422, "got a string"),
        ('{"agee": 50}', 422, "keys among the model's clinical columns (age, er, grade), got the unknown key 'agee'"),
        ('{"age": {"v": 1}}', 422, "clinical.age: expected a number or null, got an object"),
        ('{"age": NaN}', 422, "clinical.age: expected a finite number or null, got NaN or infinity"),
        ('{"age": -Infinity}', 422, "got NaN or infinity"),
    ],
)
def test_bad_clinical_values_name_what_arrived(text, status, detail):
    with pytest.raises(ApiError) as info:
        parse_clinical(text, COLUMNS)
    assert info.value.status_code == status and detail in info.value.detail, info.value.detail


def test_a_boolean_gets_the_fix_and_a_long_key_is_cut():
    with pytest.raises(ApiError) as info:
        parse_clinical('{"er": true}', COLUMNS)
    assert info.value.error.got == "a boolean" and info.value.detail.endswith("got a boolean (send 0/1 for yes/no)")
    with pytest.raises(ApiError) as info:
        parse_clinical(json.dumps({"x" * 50: 1}), COLUMNS)
    assert info.value.error.got == f"the unknown key {'x' * 40 + '...'!r}"


def test_a_model_without_clinical_columns_says_none():
    with pytest.raises(ApiError, match=r"clinical columns \(none\)"):
        parse_clinical('{"age": 1}', [])


# ---------------------------------------------------------------------------------- frame field
@pytest.mark.parametrize(("text", "index"), [(None, 0), ("", 0), ("0", 0), (" 12 ", 12)])
def test_frame_index(text, index):
    assert parse_frame(text) == index


@pytest.mark.parametrize(
    ("text", "got"), [("first", "'first'"), ("-2", "'-2'"), ("1.5", "'1.5'"), ("x" * 30, "'" + "x" * 20 + "'")]
)
def test_a_bad_frame_index_is_422(text, got):
    with pytest.raises(ApiError) as info:
        parse_frame(text)
    assert (
        info.value.status_code == 422
        and info.value.detail == f"frame: expected a frame index: an integer >= 0, got {got}"
    )


# ------------------------------------------------------------------------------------ the form
def test_the_form_gives_bytes_index_values_and_the_dicom_hint():
    png = _png(16, 16)
    got = asyncio.run(read_form(_upload(png), '{"age": 50}', "0", columns=COLUMNS, ranges={}))
    assert got == (png, 0, {"age": 50.0}, False)
    for upload in (_upload(b"DICM", "scan.DCM"), _upload(b"DICM", "x", "application/dicom")):
        assert asyncio.run(read_form(upload, None, None, columns=COLUMNS, ranges={}))[3] is True


@pytest.mark.parametrize(
    ("file", "detail"),
    [
        (None, "file: expected a multipart/form-data field 'file' with a PNG, JPEG, TIFF or BMP image"),
        (b"", "file: expected a non-empty file (a PNG, JPEG, TIFF or BMP image or a DICOM file), got 0 bytes"),
    ],
)
def test_a_form_without_a_file_is_400(file, detail):
    upload = None if file is None else _upload(file)
    with pytest.raises(ApiError) as info:
        asyncio.run(read_form(upload, None, None, columns=COLUMNS, ranges={}))
    assert info.value.status_code == 400 and info.value.detail.startswith(detail)


def test_a_value_far_outside_the_training_range_is_422():
    ranges = {"age": {"min": 20.0, "max": 90.0}}
    with pytest.raises(ApiError) as info:
        asyncio.run(read_form(_upload(_png(16, 16)), '{"age": 540}', None, columns=COLUMNS, ranges=ranges))
    assert info.value.status_code == 422 and info.value.error.where.startswith("clinical")


# ------------------------------------------------------------------------------------ the file
def test_a_png_is_read_as_a_frame():
    frame = read_upload(_png(12, 20, 51), 0, False, PixelLimits())
    assert frame.shape == (12, 20) and frame.index == 0
    assert np.allclose(frame.pixels, 51 / 255)


@pytest.mark.parametrize(
    ("data", "status", "field", "words"),
    [
        (b"just some text\n", 415, "file", ["a PNG, JPEG, TIFF or BMP image or a DICOM file", "(15 bytes)"]),
        (b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(64), 415, "file", ["(one frame)", "a video"]),
        (_png(32, 32)[:60], 422, "file", ["corrupt or truncated"]),
    ],
)
def test_a_file_that_is_no_frame(data, status, field, words):
    with pytest.raises(ApiError) as info:
        read_upload(data, 0, False, PixelLimits())
    e = info.value
    assert e.status_code == status and e.error.where == field
    for w in words:
        assert w in e.detail, e.detail
    assert "/tmp" not in e.detail and "usher2-upload-" not in e.detail


def test_a_frame_over_the_pixel_limit_is_413_before_decoding():
    with pytest.raises(ApiError) as info:
        read_upload(_png(102, 103), 0, False, PixelLimits(frame_pixels=10_485, file_samples=4 * 10_485))
    e = info.value
    assert e.status_code == 413 and "at most 10,485 pixels" in e.error.expected
    assert "102x103" in e.error.got and "--max-megapixels" in e.error.fix


def test_a_frame_index_past_the_end_is_a_frame_error():
    with pytest.raises(ApiError) as info:
        read_upload(_png(16, 16), 1, False, PixelLimits())
    assert info.value.status_code == 422 and info.value.error.where == "frame"
