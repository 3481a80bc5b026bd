"""Config of the random cutout (missing parts) augment (``type: cutout``)."""

from __future__ import annotations

from typing import Literal

import gunpowder as gp
from pydantic import Field

from voltrain.augments.base import register_augment
from voltrain.augments.section_config import SectionAugmentConfig
from voltrain.nodes.cutout_augment import CutoutAugment


@register_augment("cutout")
class CutoutAugmentConfig(SectionAugmentConfig):
    """Holes in raw (missing parts of sections, or 3D boxes); gt and mask are kept.

    See ``voltrain.nodes.cutout_augment.CutoutAugment``.
    """

    type: Literal["cutout"] = "cutout"
    size_min: float | list[float] = Field(
        description="smallest hole extent, world units (one value or one per axis z, y, x)"
    )
    size_max: float | list[float] = Field(
        description="largest hole extent, world units (one value or one per axis z, y, x)"
    )
    count_min: int = Field(1, description="fewest holes per section (per sample in 3D)")
    count_max: int = Field(3, description="most holes per section (per sample in 3D)")
    shape: Literal["box", "blob"] = Field("box", description="box, or an irregular blob")
    fill: Literal["zero", "mean", "noise"] = Field(
        "zero", description="zero, the section's (3D: sample's) mean, or noise like it"
    )
    section_probability: float = Field(
        0.1, description="with per_section, probability of cutting each section, in [0, 1]"
    )

    def node(
        self, raw_key: gp.ArrayKey, gt_key: gp.ArrayKey, mask_key: gp.ArrayKey
    ) -> gp.BatchFilter:
        return CutoutAugment(
            raw_key,
            size_min=self.size_min,
            size_max=self.size_max,
            count_min=self.count_min,
            count_max=self.count_max,
            shape=self.shape,
            fill=self.fill,
            **self.section_arguments(),
        )
