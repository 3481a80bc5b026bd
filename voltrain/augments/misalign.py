"""Config of the section misalignment augment (``type: misalign``)."""

from __future__ import annotations

from typing import Literal

import gunpowder as gp
from pydantic import Field

from voltrain.augments.base import AugmentConfig, register_augment
from voltrain.nodes.misalign_augment import MisalignAugment


@register_augment("misalign")
class MisalignAugmentConfig(AugmentConfig):
    """One section slipped, or all sections from one on shifted, in-plane; gt and mask move
    with raw (see ``voltrain.nodes.misalign_augment`` for what the mask hides)."""

    type: Literal["misalign"] = "misalign"
    mode: Literal["slip", "shift"] = Field(
        "slip", description="slip: one section moves; shift: every section from one on"
    )
    max_displacement: float = Field(
        description="largest in-plane shift per axis, in world units (e.g. nm)"
    )
    axis: int = Field(0, description="spatial axis the sections are cut along (0 = z)")

    def node(
        self, raw_key: gp.ArrayKey, gt_key: gp.ArrayKey, mask_key: gp.ArrayKey
    ) -> gp.BatchFilter:
        return MisalignAugment(
            [raw_key, gt_key, mask_key],
            mode=self.mode,
            max_displacement=self.max_displacement,
            axis=self.axis,
            p=self.p,
        )
