"""What a segmentation worker needs to know: plain, validated data that travels as JSON."""

from __future__ import annotations

import hashlib
import json

from funlib.geometry import Coordinate, Roi
from pydantic import Field

from voltrain.config import StrictModel
from voltrain.segment.config import SegmentConfig


class SegmentSpec(StrictModel):
    """A checked segmentation job: affinities, mask, output, block layout and settings.

    ``roi_*`` are world units (z, y, x); ``settings.block_shape`` is voxels.
    """

    input: str
    mask: str | None = None
    mask_offset: list[int] | None = Field(None, min_length=3, max_length=3)
    output: str
    neighborhood: list[list[int]]
    channels: list[int] | None = Field(
        None, description="the input's channels holding the affinities; None: all"
    )
    voxel_size: list[int] = Field(min_length=3, max_length=3)
    roi_offset: list[int] = Field(min_length=3, max_length=3)
    roi_shape: list[int] = Field(min_length=3, max_length=3)
    affinity_scale: float = Field(1.0, description="1/255 for uint8 affinities")
    units: list[str] | None = Field(None, description="the input's units (OME names)")
    settings: SegmentConfig

    @property
    def roi(self) -> Roi:
        return Roi(self.roi_offset, self.roi_shape)

    @property
    def thresholds(self) -> list[float]:
        return list(self.settings.thresholds)

    @property
    def block_shape(self) -> Coordinate:
        """Voxels per block."""
        return Coordinate(self.settings.block_shape)

    @property
    def volume_shape(self) -> Coordinate:
        """Voxels of the ROI."""
        return self.roi.shape / Coordinate(self.voxel_size)

    @property
    def block_roi(self) -> Roi:
        """One block's write ROI, relative to the block's origin (world units)."""
        return Roi((0, 0, 0), self.block_shape * Coordinate(self.voxel_size))

    def identity(self) -> dict:
        """What makes two fragment graphs the same; the thresholds may change on a rerun."""
        settings = self.settings.model_dump(mode="json", exclude={"thresholds"})
        text = json.dumps(
            {
                "neighborhood": self.neighborhood,
                "channels": self.channels,
                "settings": settings,
                "scale": self.affinity_scale,
            },
            sort_keys=True,
        )
        return {
            "input": self.input,
            "mask": self.mask,
            "roi_offset": self.roi_offset,
            "roi_shape": self.roi_shape,
            "settings_hash": hashlib.sha256(text.encode()).hexdigest()[:16],
        }
