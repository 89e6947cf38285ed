"""Pixel bombs: tiny files that decode to huge frames, built by streaming zlib so the tests stay small.

Each builder compresses zero rows block by block, so building a 12000 x 12000 PNG holds a few MB,
never the 144 MB frame. The three inputs are the ones of issue 22:

* :func:`grey_png_bomb` 12000 x 12000 8-bit grey PNG (about 140 KB);
* :func:`rgb_png_bomb` 13000 x 13000 8-bit RGB PNG (about 490 KB);
* :func:`deflated_dicom_bomb` 20000 x 20000 8-bit MONOCHROME2 DICOM in the deflated transfer
  syntax (about 390 KB).

:func:`peak_rss_growth_mb` runs a snippet in a fresh interpreter and reports how far it raised the
peak resident memory, which (unlike ``tracemalloc``) also counts what Pillow, zlib and pydicom
allocate in C.
"""

from __future__ import annotations

import functools
import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

_BLOCK = 4 * 1024 * 1024  # bytes of zeros handed to zlib at a time


def _deflate_zeros(compressor: zlib._Compress, n: int) -> bytes:
    """Feed ``n`` zero bytes to ``compressor`` in blocks; return what it produced so far."""
    out = []
    block = bytes(min(n, _BLOCK))
    while n > 0:
        take = min(n, len(block))
        out.append(compressor.compress(block if take == len(block) else block[:take]))
        n -= take
    return b"".join(out)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_zeros(rows: int, cols: int, *, colour: bool = False, value_rows: int = 0) -> bytes:
    """An 8-bit grey (or RGB) PNG of ``rows x cols`` black pixels, compressed as a stream.

    Args:
        rows: Image height.
        cols: Image width.
        colour: RGB (colour type 2) instead of grey (colour type 0).
        value_rows: How many leading rows hold grey level 255 instead of 0 (to check a read).

    Example:
        >>> import io
        >>> from PIL import Image
        >>> Image.open(io.BytesIO(png_zeros(9, 12))).size
        (12, 9)
    """
    channels = 3 if colour else 1
    header = struct.pack(">IIBBBBB", cols, rows, 8, 2 if colour else 0, 0, 0, 0)
    z = zlib.compressobj(9)
    row_len = 1 + cols * channels  # filter byte 0 (None) + samples
    bright = (b"\x00" + b"\xff" * (cols * channels)) * value_rows
    idat = [z.compress(bright), _deflate_zeros(z, row_len * (rows - value_rows)), z.flush()]
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(idat))
        + _png_chunk(b"IEND", b"")
    )


def deflated_dicom_zeros(
    rows: int,
    cols: int,
    *,
    frames: int = 1,
    bits: int = 8,
    pixel_bytes: int | None = None,
    private_bytes: int = 0,
    photometric: str = "MONOCHROME2",
) -> bytes:
    """A MONOCHROME2 ultrasound DICOM of zeros in Deflated Explicit VR Little Endian.

    The dataset (header and PixelData) is deflated as one raw stream (DICOM PS3.5 A.5); the
    pixel data is streamed, so building a 400 MB frame holds a few MB.

    Args:
        rows: Rows.
        cols: Columns.
        frames: NumberOfFrames (written when > 1).
        bits: BitsStored (8 or up to 16).
        pixel_bytes: Length of PixelData; None: what the header declares. A larger value makes a
            file that inflates to more than its header says.
        private_bytes: Length of a private OB element (0029,1010) of zeros before the pixel data
            (a header that is itself the bomb).
        photometric: PhotometricInterpretation.

    Example:
        >>> import io, pydicom
        >>> ds = pydicom.dcmread(io.BytesIO(deflated_dicom_zeros(8, 10)))
        >>> ds.pixel_array.shape
        (8, 10)
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = Dataset()
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    n = rows * cols * frames * ds.BitsAllocated // 8 if pixel_bytes is None else pixel_bytes
    n += n % 2  # DICOM values have an even length
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [z.compress(body.getvalue())]
    if private_bytes:
        parts += [z.compress(struct.pack("<HH2sHI", 0x0029, 0x1010, b"OB", 0, private_bytes))]
        parts += [_deflate_zeros(z, private_bytes)]
    parts += [z.compress(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, n)), _deflate_zeros(z, n), z.flush()]
    deflated = b"".join(parts)
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta)
    return head.getvalue() + deflated


@functools.cache
def grey_png_bomb() -> bytes:
    """12000 x 12000 grey PNG: 144 M pixels from about 140 KB."""
    return png_zeros(12000, 12000)


@functools.cache
def rgb_png_bomb() -> bytes:
    """13000 x 13000 RGB PNG: 169 M pixels (507 M samples) from about 490 KB."""
    return png_zeros(13000, 13000, colour=True)


@functools.cache
def deflated_dicom_bomb() -> bytes:
    """20000 x 20000 8-bit deflated DICOM: 400 M pixels from about 390 KB."""
    return deflated_dicom_zeros(20000, 20000)


def peak_rss_growth_mb(setup: str, work: str, *, timeout: float = 120) -> dict:
    """Run ``setup`` then ``work`` in a fresh Python; return how far ``work`` raised the peak RSS.

    ``growth`` is the process's peak resident memory (``VmHWM``) during ``work`` minus its
    resident memory (``VmRSS``) right after ``setup``, in MiB. The peak is reset between the two
    (``/proc/self/clear_refs``), and it is the new process's own: ``ru_maxrss`` would not do, as
    Linux carries it over from the forking parent (pytest) across ``exec``. Unlike
    ``tracemalloc`` it counts what Pillow, zlib and pydicom allocate in C. ``work`` may set
    ``result`` (JSON-serialisable) to hand values back, as ``out["result"]``.
    """
    script = "\n".join(
        [
            "import json",
            textwrap.dedent(setup),
            "def status_mb(key):",
            "    line = next(x for x in open('/proc/self/status') if x.startswith(key + ':'))",
            "    return int(line.split()[1]) / 1024",
            "with open('/proc/self/clear_refs', 'w') as fh:",
            "    fh.write('5')  # reset the peak (VmHWM) to the current RSS",
            "base = status_mb('VmRSS')",
            "result = None",
            textwrap.dedent(work),
            "print(json.dumps({'base': base, 'peak': status_mb('VmHWM'), 'result': result}))",
        ]
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"the measured snippet failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["growth"] = out["peak"] - out["base"]
    return out


def write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` and return the path."""
    path.write_bytes(data)
    return path
