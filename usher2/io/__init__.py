"""Every file check happens here: frames, DICOM, video, manifests, importers, overlays.

The names below are the stable entry points; the submodules hold the details.
"""

from usher2.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from usher2.io.batch import BatchResult, Case, read_case, read_cases
from usher2.io.errors import Failure, InputError
from usher2.io.frames import frame_kind, iter_frames, read_frame, read_image, read_mask
from usher2.io.importers import import_bus_bra, import_busi
from usher2.io.limits import DecodedSizeError, PixelLimits, pixel_limits
from usher2.io.manifest import ManifestError, Problem, read_manifest, write_manifest
from usher2.io.overlay import OverlayResult, detect_overlays, find_scan_area, inpaint_overlays

__all__ = [
    "BatchResult",
    "Case",
    "DecodedSizeError",
    "Failure",
    "InputError",
    "ManifestError",
    "OverlayResult",
    "PixelLimits",
    "Problem",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "detect_overlays",
    "find_scan_area",
    "frame_kind",
    "import_bus_bra",
    "import_busi",
    "inpaint_overlays",
    "iter_frames",
    "pixel_limits",
    "read_case",
    "read_cases",
    "read_frame",
    "read_image",
    "read_manifest",
    "read_mask",
    "write_manifest",
]
