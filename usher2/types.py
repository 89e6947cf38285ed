"""Types shared by every stage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Frame:
    """One grey-level ultrasound frame, as every stage after ``io`` sees it.

    Attributes:
        pixels: ``(H, W)`` float32 in [0, 1].
        spacing: Pixel spacing ``(row_mm, col_mm)``, or None when the file does not say.
        source: The path the frame was read from (or a description for in-memory frames).
        index: Frame number inside a multi-frame DICOM or a video; 0 for still images.
        metadata: De-identified metadata (never DICOM patient identifiers).
        scan_mask: ``(H, W)`` bool mask of the ultrasound image area (no UI, no text), or
            None when not computed (see ``usher2.io.overlay.find_scan_area``).

    Example:
        >>> import numpy as np
        >>> f = Frame(np.zeros((4, 5), np.float32), spacing=None, source="mem")
        >>> f.shape
        (4, 5)
    """

    pixels: np.ndarray
    spacing: tuple[float, float] | None
    source: str
    index: int = 0
    metadata: Mapping[str, Any] = field(default_factory=dict)
    scan_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        p = self.pixels
        if not isinstance(p, np.ndarray) or p.ndim != 2:
            got = getattr(p, "shape", type(p).__name__)
            raise ValueError(f"Frame pixels must be a 2-D (H, W) array, got {got} from {self.source}")
        if p.dtype != np.float32:
            raise ValueError(f"Frame pixels must be float32, got {p.dtype} from {self.source}")
        if self.scan_mask is not None and self.scan_mask.shape != p.shape:
            raise ValueError(
                f"Frame scan_mask shape {self.scan_mask.shape} differs from pixels {p.shape} in {self.source}"
            )
        if self.spacing is not None:
            if len(self.spacing) != 2 or not all(np.isfinite(s) and s > 0 for s in self.spacing):
                raise ValueError(f"Frame spacing must be two positive mm values, got {self.spacing} from {self.source}")

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the pixel array."""
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))
