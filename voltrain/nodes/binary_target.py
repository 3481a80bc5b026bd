"""Foreground/background training target from a label volume."""

from __future__ import annotations

import gunpowder as gp
import numpy as np

from voltrain.nodes.label_target import LabelTarget

DEFAULT_BALANCE_CLIP = (0.05, 0.95)
"""The positive fraction is clipped to this range before balancing, as gunpowder's
BalanceLabels does: a rare class's voxels weigh at most 1 / (2 * 0.05) = 10 times their
mask weight."""


def class_balanced_weight(
    target: np.ndarray,
    weight: np.ndarray,
    clip: tuple[float, float] | None = DEFAULT_BALANCE_CLIP,
) -> np.ndarray:
    """Rescale ``weight`` so positives and negatives carry equal shares of it, per channel.

    ``target`` and ``weight`` are (C, ...) arrays; a voxel is positive where target > 0.5.
    With ``f`` a channel's positive fraction of its weight, clipped to ``clip`` (None: not
    clipped), positives are scaled by 1 / (2 f) and negatives by 1 / (2 (1 - f)). While
    ``f`` is inside ``clip`` both classes then carry half of the channel's weight and its
    total is kept; outside it the rare class keeps the weight the clip bound gives it, so
    one positive voxel no longer carries half of the loss. Where a channel has only one
    class, its weight is left as it is.
    """
    channels = target.shape[0]
    positive = target.reshape(channels, -1) > 0.5
    flat_weight = weight.reshape(channels, -1)
    total = flat_weight.sum(axis=1, dtype=np.float64)
    positive_total = np.where(positive, flat_weight, 0).sum(axis=1, dtype=np.float64)
    negative_total = total - positive_total
    both = (positive_total > 0) & (negative_total > 0)
    fraction = positive_total / np.maximum(total, 1e-12)
    if clip is not None:
        fraction = np.clip(fraction, clip[0], clip[1])
    positive_scale = np.where(both, 1 / (2 * np.maximum(fraction, 1e-12)), 1.0)
    negative_scale = np.where(both, 1 / (2 * np.maximum(1 - fraction, 1e-12)), 1.0)
    scale = np.where(positive, positive_scale[:, None], negative_scale[:, None])
    return (flat_weight * scale).astype(np.float32).reshape(weight.shape)


class BinaryTarget(LabelTarget):
    """Add a foreground target (gt != 0) and its loss weight, both float32 (1, z, y, x).

    The weight is the mask (1 = labels trusted), optionally rescaled so foreground and
    background voxels each carry half of the trusted weight (see ``class_balanced_weight``).

    Args:
        gt: integer labels, 0 = background.
        mask: 0/1 array of trusted voxels, on the labels' voxel grid; None trusts all.
        target: the array to create, 1.0 on foreground voxels.
        weight: the array to create, the per-voxel loss weight.
        balance_weights: balance foreground against background within the mask.
        balance_clip: (low, high) bounds of the foreground fraction used for balancing;
            None does not clip.
    """

    def __init__(
        self,
        gt: gp.ArrayKey,
        mask: gp.ArrayKey | None,
        target: gp.ArrayKey,
        weight: gp.ArrayKey,
        balance_weights: bool = True,
        balance_clip: tuple[float, float] | None = DEFAULT_BALANCE_CLIP,
    ):
        super().__init__(gt, mask, target, weight)
        self.balance_weights = balance_weights
        self.balance_clip = balance_clip

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch:
        gt = batch[self.gt]
        target = (gt.data != 0).astype(np.float32)[np.newaxis]
        if self.mask is None:
            weight = np.ones_like(target)
        else:
            weight = (batch[self.mask].data > 0).astype(np.float32)[np.newaxis]
        if self.balance_weights:
            weight = class_balanced_weight(target, weight, self.balance_clip)
        return self.outputs(gt.spec.roi, target, weight)
