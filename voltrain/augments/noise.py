"""Config of the random noise augment (``type: noise``)."""

from __future__ import annotations

from typing import Literal

import gunpowder as gp
from pydantic import Field

from voltrain.augments.base import AugmentConfig, register_augment
from voltrain.nodes.noise_augment import NoiseAugment


@register_augment("noise")
class NoiseAugmentConfig(AugmentConfig):
    """Random gaussian, poisson (shot) or salt-and-pepper noise on raw.

    See ``voltrain.nodes.noise_augment.NoiseAugment`` for how each mode reads ``var`` and
    ``amount``.
    """

    type: Literal["noise"] = "noise"
    mode: Literal["gaussian", "poisson", "s&p"] = Field(
        "gaussian", description="gaussian, poisson (shot noise) or s&p (salt-and-pepper)"
    )
    var: float = Field(
        0.01, description="gaussian: noise variance (>= 0); poisson: variance at raw = 1"
    )
    amount: float = Field(0.05, description="s&p: fraction of voxels set to 0 or 1, in [0, 1]")
    clip: bool = Field(True, description="clip raw to [0, 1] afterwards")

    def node(
        self, raw_key: gp.ArrayKey, gt_key: gp.ArrayKey, mask_key: gp.ArrayKey
    ) -> gp.BatchFilter:
        return NoiseAugment(
            raw_key, mode=self.mode, var=self.var, amount=self.amount, clip=self.clip, p=self.p
        )
