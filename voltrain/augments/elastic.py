"""Config of the elastic deformation + rotation augment (``type: elastic``)."""

from __future__ import annotations

from typing import Literal

import gunpowder as gp
from pydantic import Field

from voltrain.augments.base import AugmentConfig, register_augment
from voltrain.nodes.elastic_augment import ElasticAugment

SPATIAL_DIMS = 3


@register_augment("elastic")
class ElasticAugmentConfig(AugmentConfig):
    """Smooth random deformation and rotation of raw, gt and mask by one world-space map.

    All lengths are in world units (e.g. nm), one value per spatial axis (z, y, x). For
    anisotropic EM (e.g. 40x4x4 nm) use ``rotation_axes: [1, 2]`` so that z stays put.
    """

    type: Literal["elastic"] = "elastic"
    control_point_spacing: list[float] = Field(
        description="world distance between control points of the deformation, per axis"
    )
    jitter_sigma: list[float] = Field(
        description="standard deviation of control point displacements (world units), per axis"
    )
    rotate: bool = Field(True, description="whether to rotate")
    rotation_axes: list[int] | None = Field(
        None,
        description="spatial axes spanning the rotation plane; None rotates in full 3D",
    )
    max_rotation: float = Field(180.0, description="largest rotation angle in degrees, 0 to 180")

    def node(
        self, raw_key: gp.ArrayKey, gt_key: gp.ArrayKey, mask_key: gp.ArrayKey
    ) -> gp.BatchFilter:
        return ElasticAugment(
            raw_key=raw_key,
            nearest_keys=[gt_key, mask_key],
            control_point_spacing=self.control_point_spacing,
            jitter_sigma=self.jitter_sigma,
            rotate=self.rotate,
            rotation_axes=self.rotation_axes,
            max_rotation=self.max_rotation,
            p=self.p,
        )
