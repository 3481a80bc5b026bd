"""Config of the random intensity scale-and-shift augment (``type: intensity``)."""

from __future__ import annotations

from typing import Literal

import gunpowder as gp
from pydantic import Field

from voltrain.augments.base import AugmentConfig, register_augment
from voltrain.nodes.intensity_augment import IntensityAugment


@register_augment("intensity")
class IntensityAugmentConfig(AugmentConfig):
    """Random ``raw * scale + shift`` with scale and shift uniform in their ranges."""

    type: Literal["intensity"] = "intensity"
    scale_min: float = Field(0.9, ge=0.0, description="smallest scale factor")
    scale_max: float = Field(1.1, description="largest scale factor (>= scale_min)")
    shift_min: float = Field(-0.1, description="smallest additive shift")
    shift_max: float = Field(0.1, description="largest additive shift (>= shift_min)")
    clip: bool = Field(True, description="clip raw to [0, 1] afterwards")

    def node(
        self, raw_key: gp.ArrayKey, gt_key: gp.ArrayKey, mask_key: gp.ArrayKey
    ) -> gp.BatchFilter:
        return IntensityAugment(
            raw_key,
            scale_min=self.scale_min,
            scale_max=self.scale_max,
            shift_min=self.shift_min,
            shift_max=self.shift_max,
            clip=self.clip,
            p=self.p,
        )
