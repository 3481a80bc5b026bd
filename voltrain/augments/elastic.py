"""Config of the elastic deformation + rotation augment (``type: elastic``)."""

from __future__ import annotations

from typing import Literal

import gunpowder as gp
from pydantic import Field, field_validator

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
    max_rotation: float = Field(
        180.0, ge=0.0, le=180.0, description="largest rotation angle in degrees"
    )

    @field_validator("control_point_spacing")
    @classmethod
    def _spacing_positive(cls, value: list[float]) -> list[float]:
        _check_per_axis(value)
        if any(v <= 0 for v in value):
            raise ValueError(f"every control_point_spacing must be > 0, got {value}")
        return value

    @field_validator("jitter_sigma")
    @classmethod
    def _sigma_non_negative(cls, value: list[float]) -> list[float]:
        _check_per_axis(value)
        if any(v < 0 for v in value):
            raise ValueError(f"every jitter_sigma must be >= 0, got {value}")
        return value

    @field_validator("rotation_axes")
    @classmethod
    def _axes_valid(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return value
        if len(set(value)) != len(value) or len(value) < 2:
            raise ValueError(f"rotation_axes needs 2 or 3 axes, each listed once, got {value}")
        if any(not 0 <= axis < SPATIAL_DIMS for axis in value):
            raise ValueError(f"rotation_axes must be spatial axes in 0..2, got {value}")
        return value

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


def _check_per_axis(value: list[float]) -> None:
    if len(value) != SPATIAL_DIMS:
        raise ValueError(f"needs one value per spatial axis (z, y, x), got {value}")
