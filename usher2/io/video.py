"""Cine loops (mp4, avi, ...) read with OpenCV, one grey frame at a time.

OpenCV does not raise on bad video: ``VideoCapture`` opens silently and ``read`` returns
``(False, None)``. Every such case is checked here and turned into an ``InputError``.

Size: the container's frame width and height are checked against the per-frame decoded-size limit
(:class:`~usher2.io.limits.PixelLimits`) before the first frame is decoded, and every decoded
frame is checked again (a container can misreport its size). Frames are decoded one at a time,
so the per-file limit does not apply to a video.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from usher2.io.errors import InputError
from usher2.io.limits import PixelLimits, resolve_limits
from usher2.io.pixels import check_file, make_frame, rgb_to_grey
from usher2.types import Frame

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".wmv", ".mpg", ".mpeg")


def _open(path: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise InputError(
            path,
            "a video OpenCV can decode (e.g. mp4 with mp4v/H.264, avi with MJPG)",
            "a file OpenCV cannot open (corrupt, truncated, or an unsupported codec)",
            fix="re-encode it, e.g. `ffmpeg -i in -c:v libx264 out.mp4`",
        )
    return cap


def _metadata(cap: cv2.VideoCapture) -> dict[str, Any]:
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    fourcc = "".join(chr((code >> (8 * k)) & 0xFF) for k in range(4)).strip("\x00 ")
    return {
        "format": "video",
        "fps": float(cap.get(cv2.CAP_PROP_FPS)),
        "frame_count_reported": int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
        "fourcc": fourcc if fourcc.isprintable() else "",
    }


def _grey(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 2:
        return np.divide(bgr, 255.0, dtype=np.float32)
    return rgb_to_grey(bgr[..., 2::-1], scale=255.0)  # OpenCV gives BGR(A)


def _frame(img: np.ndarray, source: Path, i: int, meta: dict[str, Any], limits: PixelLimits) -> Frame:
    limits.check_frame(source, img.shape[0], img.shape[1], what=f"a video frame ({i})")
    return make_frame(_grey(img), source=source, index=i, metadata=meta, copy=False)


def iter_video_frames(path: str | Path, *, limits: PixelLimits | None = None) -> Generator[Frame, None, None]:
    """Every frame of a video, in order, as grey ``Frame``s (spacing None).

    The file is opened and its first frame decoded before the iterator is returned, so a
    bad file raises here.

    Args:
        path: A video file OpenCV can decode.
        limits: The decoded-size limit (per frame); None: :func:`~usher2.io.limits.default_limits`.

    Returns:
        An iterator of ``Frame`` with ``(H, W)`` float32 pixels (BT.601 grey of the BGR frame / 255).

    Raises:
        InputError: Missing, empty, corrupt or frameless video.
        DecodedSizeError: Frames larger than the limit (from the container, before decoding).

    Example:
        >>> n = sum(1 for _ in iter_video_frames("cine.mp4"))  # doctest: +SKIP
    """
    source = check_file(path, what="video file")
    lim = resolve_limits(limits)
    cap = _open(source)
    try:
        lim.check_frame(
            source,
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            what="a video frame",
        )
    except InputError:
        cap.release()
        raise
    meta = _metadata(cap)
    ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise InputError(source, "a video with at least one decodable frame", "no frame could be decoded")

    try:
        head = _frame(first, source, 0, meta, lim)
    except InputError:
        cap.release()
        raise

    def frames() -> Generator[Frame, None, None]:
        try:
            yield head
            i = 1
            while True:
                ok, img = cap.read()
                if not ok or img is None:
                    return
                yield _frame(img, source, i, meta, lim)
                i += 1
        finally:
            cap.release()

    return frames()


def read_video_frame(path: str | Path, index: int = 0, *, limits: PixelLimits | None = None) -> Frame:
    """Frame ``index`` of a video, decoding from the start (exact even where seeking is not).

    Raises:
        InputError: As :func:`iter_video_frames`, or ``index`` beyond the last frame.

    Example:
        >>> read_video_frame("cine.avi", 3).index  # doctest: +SKIP
        3
    """
    if index < 0:
        raise InputError(path, "a frame index >= 0", str(index))
    n = 0
    with contextlib.closing(iter_video_frames(path, limits=limits)) as frames:
        for frame in frames:
            if frame.index == index:
                return frame
            n += 1
    raise InputError(path, f"a frame index in 0..{n - 1}", f"{index} (the video has {n} frames)")
