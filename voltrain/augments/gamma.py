"""Config of the random gamma augment (``type: gamma``)."""

from __future__ import annotations

from typing import Literal

import gunpowder as gp
from pydantic import Field

from voltrain.augments.base import AugmentConfig, register_augment
from voltrain.nodes.gamma_augment import GammaAugment


@register_augment("gamma")
class GammaAugmentConfig(AugmentConfig):
    """Random ``raw ** gamma``, gamma log-uniform in [gamma_min, gamma_max]."""

    type: Literal["gamma"] = "gamma"
    gamma_min: float = Field(0.75, description="smallest gamma (> 0)")
    gamma_max: float = Field(1.5, description="largest gamma (>= gamma_min)")

    def node(
        self, raw_key: gp.ArrayKey, gt_key: gp.ArrayKey, mask_key: gp.ArrayKey
    ) -> gp.BatchFilter:
        return GammaAugment(raw_key, gamma_min=self.gamma_min, gamma_max=self.gamma_max, p=self.p)
