"""Config of the random contrast augment (``type: contrast``): factor and gamma, or CLAHE."""

from __future__ import annotations

from typing import ClassVar, Literal

import gunpowder as gp
from pydantic import Field

from voltrain.augments.base import register_augment
from voltrain.augments.section_config import SectionAugmentConfig
from voltrain.nodes.clahe_augment import ClaheAugment
from voltrain.nodes.contrast_augment import ContrastAugment


@register_augment("contrast")
class ContrastAugmentConfig(SectionAugmentConfig):
    """Per-section (or whole-sample) contrast and gamma, or local contrast by CLAHE.

    See ``voltrain.nodes.contrast_augment.ContrastAugment`` (``mode: scale``) and
    ``voltrain.nodes.clahe_augment.ClaheAugment`` (``mode: clahe``).
    """

    mode_keys: ClassVar[dict[str, frozenset[str]]] = {
        "scale": frozenset(
            {"factor_min", "factor_max", "gamma_min", "gamma_max", "centre", "clip"}
        ),
        "clahe": frozenset({"kernel_size", "clip_limit_min", "clip_limit_max", "nbins"}),
    }

    type: Literal["contrast"] = "contrast"
    mode: Literal["scale", "clahe"] = Field(
        "scale", description="scale: contrast factor and gamma; clahe: local equalisation"
    )
    factor_min: float = Field(0.8, description="scale: smallest contrast factor (>= 0)")
    factor_max: float = Field(1.2, description="scale: largest contrast factor")
    gamma_min: float = Field(0.8, description="scale: smallest gamma (> 0)")
    gamma_max: float = Field(1.25, description="scale: largest gamma")
    centre: Literal["section", "sample"] = Field(
        "section", description="scale: stretch around each section's mean or the sample's"
    )
    clip: bool = Field(True, description="scale: clip raw to [0, 1] afterwards")
    kernel_size: float | list[float] | None = Field(
        None, description="clahe: contextual region, world units (null: 1/8 of each side)"
    )
    clip_limit_min: float = Field(0.01, description="clahe: smallest clip limit, in [0, 1]")
    clip_limit_max: float = Field(0.03, description="clahe: largest clip limit, in [0, 1]")
    nbins: int = Field(256, description="clahe: histogram bins")

    def node(
        self, raw_key: gp.ArrayKey, gt_key: gp.ArrayKey, mask_key: gp.ArrayKey
    ) -> gp.BatchFilter:
        sections = self.section_arguments()
        if self.mode == "clahe":
            return ClaheAugment(
                raw_key,
                kernel_size=self.kernel_size,
                clip_limit_min=self.clip_limit_min,
                clip_limit_max=self.clip_limit_max,
                nbins=self.nbins,
                **sections,
            )
        return ContrastAugment(
            raw_key,
            factor_min=self.factor_min,
            factor_max=self.factor_max,
            gamma_min=self.gamma_min,
            gamma_max=self.gamma_max,
            centre=self.centre,
            clip=self.clip,
            **sections,
        )
