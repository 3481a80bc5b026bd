"""Config of the fixed intensity map ``raw * scale + shift`` (``type: intensity_scale_shift``)."""

from __future__ import annotations

from typing import Literal

import gunpowder as gp
from pydantic import Field

from voltrain.augments.base import AugmentConfig, register_augment
from voltrain.nodes.intensity_scale_shift import IntensityScaleShift


@register_augment("intensity_scale_shift")
class IntensityScaleShiftConfig(AugmentConfig):
    """Deterministic ``raw * scale + shift``; ``scale: 2, shift: -1`` maps [0, 1] to [-1, 1]."""

    type: Literal["intensity_scale_shift"] = "intensity_scale_shift"
    scale: float = Field(description="the factor raw is multiplied with")
    shift: float = Field(description="the value added after scaling")

    def node(
        self, raw_key: gp.ArrayKey, gt_key: gp.ArrayKey, mask_key: gp.ArrayKey
    ) -> gp.BatchFilter:
        return IntensityScaleShift(raw_key, scale=self.scale, shift=self.shift, p=self.p)
