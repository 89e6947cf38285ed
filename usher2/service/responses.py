"""The JSON response models (pydantic) of ``POST /v1/score``: :class:`ScoreResponse` and its parts.

FastAPI checks every answer against :class:`ScoreResponse` and publishes these models, with their
field descriptions, in the OpenAPI schema (``/openapi.json``).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["RLE", "FrameInfo", "ModelRef", "ScoreResponse"]


class RLE(BaseModel):
    """COCO uncompressed run-length encoding of the mask (see :mod:`usher2.service.rle`)."""

    size: list[int] = Field(description="[H, W]")
    counts: list[int] = Field(description="Alternating run lengths, starting with background (0s).")
    order: str = Field("F", description="F: column-major (COCO's order).")


class FrameInfo(BaseModel):
    """The frame that was scored."""

    height: int
    width: int
    index: int = Field(description="Frame index inside a multi-frame DICOM (0 for an image).")
    spacing_mm: list[float] | None = Field(description="(row, column) pixel spacing in mm, when the file says.")


class ModelRef(BaseModel):
    """The model that scored the frame."""

    name: str | None
    version: str | None
    sha256: str


class ScoreResponse(BaseModel):
    """The result for one frame."""

    request_id: str
    probability: float | None = Field(description="P(positive); null when the frame could not be scored.")
    label: int | None = Field(description="1 when probability >= threshold; null when not scored.")
    threshold: float
    flags: list[str] = Field(
        description="Among no_lesion, low_segmentation_confidence, clinical_missing, clinical_out_of_range."
    )
    error: str | None = Field(description="Why the frame was not scored (no lesion found), else null.")
    mask_uncertainty: float | None = Field(description="The segmenter's mean binary entropy.")
    mask_area_px: int | None
    mask_png: str | None = Field(description="Base64 PNG, grey: 255 on the lesion, 0 elsewhere.")
    mask_rle: RLE | None
    heatmap_png: str | None = Field(description="Base64 PNG, grey: round(255 * Grad-CAM); 0 outside the ROI box.")
    overlay_png: str = Field(description="Base64 PNG, RGB: frame + Grad-CAM inside the ROI box + lesion contour.")
    frame: FrameInfo
    model: ModelRef
    timings: dict[str, float] = Field(
        description="Seconds: queue_s (waiting for a thread), read_s, model_wait_s (waiting for the model), "
        "score_s (the batch's run; its frames: batch_size; the frame's stages: prepare_s, features_s, model_s, "
        "heatmap_s), encode_s, total_s."
    )
