"""usher2: HER2 status from breast-ultrasound frames (and the same core for MRI studies).

The end-to-end entry point is :class:`usher2.Pipeline` (imported on first use, so ``import usher2``
stays light).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Pipeline", "PipelineConfig", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Pipeline", "PipelineConfig"):
        from usher2 import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'usher2' has no attribute {name!r}")
