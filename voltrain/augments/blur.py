"""Config of the random blur augment (``type: blur``)."""

from __future__ import annotations

from typing import ClassVar, Literal

import gunpowder as gp
from pydantic import Field

from voltrain.augments.base import register_augment
from voltrain.augments.section_config import SectionAugmentConfig
from voltrain.nodes.blur_augment import BlurAugment


@register_augment("blur")
class BlurAugmentConfig(SectionAugmentConfig):
    """Gaussian (defocus) or motion blur of raw, per section or in 3D; world units.

    See ``voltrain.nodes.blur_augment.BlurAugment``.
    """

    mode_keys: ClassVar[dict[str, frozenset[str]]] = {
        "gaussian": frozenset({"sigma_min", "sigma_max"}),
        "motion": frozenset({"length_min", "length_max"}),
    }

    type: Literal["blur"] = "blur"
    mode: Literal["gaussian", "motion"] = Field(
        "gaussian", description="gaussian (defocus) or motion (a line in the section plane)"
    )
    sigma_min: float | None = Field(None, description="gaussian: smallest sigma, world units")
    sigma_max: float | None = Field(None, description="gaussian: largest sigma, world units")
    length_min: float | None = Field(None, description="motion: shortest line, world units")
    length_max: float | None = Field(None, description="motion: longest line, world units")
    section_probability: float = Field(
        0.1, description="with per_section, probability of blurring each section, in [0, 1]"
    )

    def node(
        self, raw_key: gp.ArrayKey, gt_key: gp.ArrayKey, mask_key: gp.ArrayKey
    ) -> gp.BatchFilter:
        return BlurAugment(
            raw_key,
            mode=self.mode,
            sigma_min=self.sigma_min,
            sigma_max=self.sigma_max,
            length_min=self.length_min,
            length_max=self.length_max,
            **self.section_arguments(),
        )
