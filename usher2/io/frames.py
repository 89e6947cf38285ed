"""One entry for every frame format: raster images, DICOM and video; and binary masks.

:func:`read_frame` and :func:`iter_frames` look at the file's first bytes (and then its
suffix) to choose a reader:

* PNG, JPEG, BMP, TIFF (one frame): 8-bit values are divided by 255, 16-bit by 65535;
  ``"1"`` (bilevel) images give 0/1; float32 TIFFs must already lie in [0, 1]. RGB, RGBA
  (alpha ignored), CMYK, YCbCr and palette images become BT.601 grey
  ``0.299 R + 0.587 G + 0.114 B``. Grey+alpha (2-channel), float64 and complex images are refused.
* DICOM (all frames), see :mod:`usher2.io.dicom`.
* Video (all frames), see :mod:`usher2.io.video`.

Every frame is at least :data:`~usher2.io.pixels.MIN_SIDE` (8) pixels on each side, and at most
the decoded-size limit (:class:`~usher2.io.limits.PixelLimits`, 64 megapixels by default), which is
checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from usher2.io.dicom import DICOM_SUFFIXES, iter_dicom_frames, read_dicom_frame
from usher2.io.errors import InputError
from usher2.io.limits import DecodedSizeError, PixelLimits, resolve_limits
from usher2.io.pixels import MIN_SIDE, check_file, make_frame, rgb_to_grey
from usher2.io.video import VIDEO_SUFFIXES, iter_video_frames, read_video_frame
from usher2.types import Frame

__all__ = ["MIN_SIDE", "frame_kind", "iter_frames", "read_frame", "read_image", "read_mask"]

FrameKind = Literal["image", "dicom", "video"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_RGB_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr")
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)


def frame_kind(path: str | Path) -> FrameKind:
    """Which reader a file needs, from its first bytes and then its suffix.

    Raises:
        InputError: Missing or empty file, or content that is none of image, DICOM or video.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.png"
        >>> _ = p.write_bytes(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(100))
        >>> frame_kind(p)
        'image'
    """
    p = check_file(path)
    with p.open("rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM":
        return "dicom"
    if any(head.startswith(magic) for magic, _ in _MAGIC):
        return "image"
    if (head[:4] == b"RIFF" and head[8:12] == b"AVI ") or head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3":
        return "video"
    suffix = p.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return "dicom"  # DICOM written without the 128-byte preamble
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"  # the image reader names what is wrong with the content
    raise InputError(
        p,
        "a PNG, JPEG, BMP, TIFF, DICOM or video (mp4/avi) file",
        f"unrecognised content with suffix {suffix or '(none)'!r}",
    )


def _open_pil(p: Path, data: bytes, what: str, limits: PixelLimits) -> Image.Image:
    """Open ``data`` with Pillow, check its size from the header, and only then decode it."""
    try:
        im = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError as exc:
        raise InputError(p, f"{what} Pillow can decode (PNG, JPEG, BMP, TIFF)", _describe_unreadable(data)) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # the warning when it is an error
        raise DecodedSizeError(
            p,
            f"{what} within Pillow's own decompression-bomb guard (PIL.Image.MAX_IMAGE_PIXELS = "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels)",
            f"a larger one ({exc})",
            fix="downscale the file",
        ) from exc
    except Exception as exc:  # Pillow raises OSError/SyntaxError/ValueError... for damaged headers
        raise _corrupt(p, what, exc) from exc
    width, height = im.size
    limits.check_frame(p, height, width, what=what)
    try:
        im.load()
    except Exception as exc:  # Pillow raises OSError/SyntaxError/ValueError... for damaged files
        raise _corrupt(p, what, exc) from exc
    return im


def _corrupt(p: Path, what: str, exc: Exception) -> InputError:
    return InputError(
        p,
        f"{what} that is complete",
        f"a corrupt or truncated file ({type(exc).__name__}: {exc})",
        fix="export or copy the file again",
    )


def _describe_unreadable(data: bytes) -> str:
    """What arrived, for a file Pillow does not recognise (float64/complex TIFFs name their dtype)."""
    fmt = next((name for magic, name in _MAGIC if data.startswith(magic)), None)
    if fmt == "TIFF":
        try:
            import tifffile  # optional: only to name the sample type in the error

            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                page = tif.pages[0]
                return f"a TIFF with unsupported samples: dtype {page.dtype}, shape {page.shape}"
        except ImportError:
            pass
        except Exception as exc:  # tifffile could not parse it either: report that
            return f"a corrupt TIFF ({type(exc).__name__}: {exc})"
        return "a TIFF with an unsupported sample format (e.g. float64 or complex)"
    if fmt is not None:
        return f"a corrupt {fmt} file (the header is unreadable)"
    return "content that is not a recognised image format"


def _is_16bit_colour(im: Image.Image, data: bytes) -> bool:
    """Pillow reads 16-bit RGB(A) as 8-bit; those files go through OpenCV to keep their depth."""
    if im.format == "PNG":
        return data[24] == 16 and data[25] in (2, 6)
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)
        return bits is not None and max(np.atleast_1d(bits)) == 16
    return False


def _image_to_grey(p: Path, im: Image.Image, data: bytes) -> np.ndarray:
    """Decoded image -> ``(H, W)`` float32 grey in [0, 1] (float32 division of the integer levels
    equals the float64 quotient rounded to float32, so no float64 frame is needed)."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im).astype(np.float32)
    if mode == "L":
        return np.divide(np.asarray(im), 255.0, dtype=np.float32)
    if mode.startswith("I;16"):
        return np.divide(np.asarray(im), 65535.0, dtype=np.float32)
    if mode == "I":
        arr = np.asarray(im)
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 65535:
            raise InputError(
                p,
                "8- or 16-bit unsigned grey levels",
                f"32-bit integers in [{lo:g}, {hi:g}]",
                fix="save as 16-bit",
            )
        return np.divide(arr, 65535.0, dtype=np.float32)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        finite = np.isfinite(arr)
        if not finite.all() or arr.min() < 0 or arr.max() > 1:
            got = "NaN/inf values" if not finite.all() else f"values in [{arr.min():g}, {arr.max():g}]"
            raise InputError(p, "a float32 image already scaled to [0, 1]", got, fix="save it as 8- or 16-bit")
        return arr
    if mode in ("P", "PA"):
        return rgb_to_grey(np.asarray(im.convert("RGBA")), scale=255.0)
    if mode in _RGB_MODES:
        if _is_16bit_colour(im, data):
            arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
                raise InputError(p, "a 16-bit RGB(A) image OpenCV can decode", "a file OpenCV cannot decode")
            return rgb_to_grey(arr[..., 2::-1], scale=65535.0)
        return rgb_to_grey(np.asarray(im if mode == "RGB" else im.convert("RGB")), scale=255.0)
    if mode in ("LA", "La"):
        raise InputError(
            p,
            "a grey, RGB, RGBA or palette image",
            f"a 2-channel (grey + alpha, mode {mode}) image",
            fix="drop the alpha channel, e.g. Image.open(p).convert('L').save(p)",
        )
    raise InputError(p, "a grey, RGB, RGBA or palette image", f"unsupported Pillow mode {mode!r}")


def read_image(path: str | Path, *, limits: PixelLimits | None = None) -> Frame:
    """Read a PNG, JPEG, BMP or TIFF file as one grey frame.

    Args:
        path: The image file.
        limits: The decoded-size limit; None: :func:`~usher2.io.limits.default_limits`.

    Returns:
        A ``Frame`` with ``(H, W)`` float32 pixels in [0, 1], spacing None, index 0, and
        metadata ``{"format": ..., "mode": ..., "bits": 8 | 16 | 1 | 32}``.

    Raises:
        InputError: Missing, zero-byte, corrupt or truncated file; unsupported mode (2-channel,
            float64, complex, 32-bit integers); smaller than 8x8.
        DecodedSizeError: Larger than the limit (checked from the header, before decoding).

    Example:
        >>> import pathlib, tempfile
        >>> from PIL import Image
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.new("L", (16, 8), 255).save(p)
        >>> f = read_image(p)
        >>> f.shape, float(f.pixels.max())
        ((8, 16), 1.0)
    """
    p = check_file(path, what="image file")
    data = p.read_bytes()
    im = _open_pil(p, data, "an image", resolve_limits(limits))
    if getattr(im, "n_frames", 1) > 1:
        warnings.warn(f"{p}: has {im.n_frames} pages; only the first is read", stacklevel=2)
    grey = _image_to_grey(p, im, data)
    bits = 16 if im.mode.startswith("I;16") or (im.mode in _RGB_MODES and _is_16bit_colour(im, data)) else None
    bits = bits or {"1": 1, "I": 32, "F": 32}.get(im.mode, 8)
    meta = {"format": str(im.format), "mode": im.mode, "bits": bits}
    return make_frame(grey, source=p, metadata=meta, copy=False)


def read_frame(path: str | Path, index: int = 0, *, limits: PixelLimits | None = None) -> Frame:
    """Read frame ``index`` of any supported file (image, DICOM or video).

    Args:
        path: An image, DICOM or video file; the reader is chosen from its content.
        index: Frame number; a still image only has frame 0.
        limits: The decoded-size limit, checked from the header before decoding; None:
            :func:`~usher2.io.limits.default_limits`.

    Returns:
        A ``Frame``: ``(H, W)`` float32 pixels in [0, 1], spacing in mm where the file says.

    Raises:
        InputError: The file or the index is bad; the message names the file.
        DecodedSizeError: The header declares more pixels than ``limits`` allow.

    Example:
        >>> import pathlib, tempfile
        >>> from PIL import Image
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.new("L", (8, 8), 51).save(p)
        >>> round(float(read_frame(p).pixels[0, 0]), 3)
        0.2
    """
    kind = frame_kind(path)
    if kind == "dicom":
        return read_dicom_frame(path, index, limits=limits)
    if kind == "video":
        return read_video_frame(path, index, limits=limits)
    if index != 0:
        raise InputError(path, "frame index 0 (a still image has one frame)", str(index))
    return read_image(path, limits=limits)


def iter_frames(path: str | Path, *, limits: PixelLimits | None = None) -> Iterator[Frame]:
    """Every frame of a file: 1 for an image, all for a DICOM or a video.

    The file is opened and checked (the decoded-size limit too, see :func:`read_frame`) before
    the iterator is returned, so bad input raises here and not in the middle of a loop.

    Example:
        >>> import pathlib, tempfile
        >>> from PIL import Image
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.png"
        >>> Image.new("L", (8, 8)).save(p)
        >>> len(list(iter_frames(p)))
        1
    """
    kind = frame_kind(path)
    if kind == "dicom":
        return iter_dicom_frames(path, limits=limits)
    if kind == "video":
        return iter_video_frames(path, limits=limits)
    return iter([read_image(path, limits=limits)])


_BINARY_SETS = ({0, 1}, {0, 255}, {0, 65535})


def read_mask(
    path: str | Path,
    expected_shape: tuple[int, int] | None = None,
    *,
    case: str | None = None,
    allow_empty: bool = False,
    limits: PixelLimits | None = None,
) -> np.ndarray:
    """Read a binary lesion mask (0/255 or 0/1, grey, bilevel, palette indices or equal-channel RGB).

    Args:
        path: A PNG/BMP/TIFF mask (JPEG masks fail: compression adds grey levels).
        expected_shape: The image's ``(H, W)``; a different mask shape is an error.
        case: The case id, named in errors.
        allow_empty: Accept a mask with no foreground (e.g. BUSI "normal" frames).
        limits: The decoded-size limit, checked from the header; None:
            :func:`~usher2.io.limits.default_limits`.

    Returns:
        ``(H, W)`` bool, True on the lesion.

    Raises:
        InputError: Unreadable file, non-binary values, shape mismatch, or an empty mask.
        DecodedSizeError: Larger than the limit (checked before decoding).

    Example:
        >>> import pathlib, tempfile
        >>> from PIL import Image
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.png"
        >>> a = np.zeros((8, 8), np.uint8); a[2:4, 2:5] = 255
        >>> Image.fromarray(a).save(p)
        >>> int(read_mask(p, (8, 8)).sum())
        6
    """
    p = check_file(path, what="mask file")
    where = f"{p} (case {case})" if case else str(p)
    im = _open_pil(p, p.read_bytes(), "a mask image", resolve_limits(limits))
    mode = im.mode
    if mode in ("RGB", "RGBA", "RGBX"):
        rgb = np.asarray(im)[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise InputError(
                where,
                "a grey or binary mask",
                "a colour image whose R, G, B channels differ",
                fix="save it as grey",
            )
        arr = rgb[..., 0]
    elif mode == "1" or mode == "L" or mode == "P" or mode == "I" or mode.startswith("I;16"):
        arr = np.asarray(im)
    else:
        raise InputError(where, "a grey, bilevel or palette mask", f"Pillow mode {mode!r}")
    values = np.unique(arr)
    value_set = {int(v) for v in values} if arr.dtype != np.bool_ else {int(v) for v in values.astype(np.uint8)}
    if not any(value_set <= allowed for allowed in _BINARY_SETS):
        shown = ", ".join(str(v) for v in sorted(value_set)[:6]) + (", ..." if len(value_set) > 6 else "")
        raise InputError(
            where,
            "a binary mask with values 0/255 or 0/1",
            f"{len(value_set)} distinct values ({shown})",
            fix="threshold it and save as PNG (JPEG compression adds grey levels)",
        )
    mask = arr > 0
    if expected_shape is not None and tuple(mask.shape) != tuple(expected_shape):
        exp, got = tuple(int(s) for s in expected_shape), tuple(int(s) for s in mask.shape)
        raise InputError(
            where,
            f"a mask of the image's shape {exp}",
            f"{got}",
            fix=f"image and mask shapes differ: {exp} vs {got}; check that the row pairs the right files",
        )
    if not allow_empty and not mask.any():
        raise InputError(
            where,
            "a mask with at least one foreground pixel",
            f"mask is empty (0 foreground pixels){f' in case {case}' if case else ''}",
            fix="leave the mask cell empty for frames without a lesion",
        )
    return mask
