"""Config of the random mirror/transpose augment (``type: simple``)."""

from __future__ import annotations

from typing import Literal

import gunpowder as gp
from pydantic import Field

from voltrain.augments.base import AugmentConfig, register_augment
from voltrain.nodes.mirror_transpose_augment import MirrorTransposeAugment


@register_augment("simple")
class SimpleAugmentConfig(AugmentConfig):
    """Random mirroring and transposition of raw, gt and mask together.

    For anisotropic data (e.g. voxel size (40, 4, 4)) set ``transpose_axes: [1, 2]``: only
    axes of equal voxel size may be transposed with each other.
    """

    type: Literal["simple"] = "simple"
    mirror_axes: list[int] | None = Field(
        None, description="spatial axes that may be mirrored; null means all"
    )
    transpose_axes: list[int] | None = Field(
        None, description="spatial axes permuted among each other; null means all, [] none"
    )
    mirror_probability: float = Field(
        0.5, description="probability of mirroring each axis in mirror_axes, in [0, 1]"
    )

    def node(
        self, raw_key: gp.ArrayKey, gt_key: gp.ArrayKey, mask_key: gp.ArrayKey
    ) -> gp.BatchFilter:
        return MirrorTransposeAugment(
            [raw_key, gt_key, mask_key],
            mirror_axes=self.mirror_axes,
            transpose_axes=self.transpose_axes,
            mirror_probability=self.mirror_probability,
            p=self.p,
        )
