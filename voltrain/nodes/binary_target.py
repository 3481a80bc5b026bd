"""Foreground/background training target from a label volume."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
from funlib.geometry import Roi

from voltrain.errors import DataError

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


def check_same_voxel_size(node: gp.BatchFilter, gt_key: gp.ArrayKey, mask_key: gp.ArrayKey):
    """Raise ``DataError`` if the mask is not on the labels' voxel grid."""
    gt_voxel_size = node.spec[gt_key].voxel_size
    mask_voxel_size = node.spec[mask_key].voxel_size
    if mask_voxel_size != gt_voxel_size:
        raise DataError(
            f"{mask_key} has voxel size {tuple(mask_voxel_size)} but {gt_key} has "
            f"{tuple(gt_voxel_size)}; the mask must share the labels' voxel size"
        )


def requested_output_roi(request: gp.BatchRequest, keys: tuple[gp.ArrayKey, ...]) -> Roi:
    """The ROI covering every requested one of ``keys`` (computed once, cropped later)."""
    rois = [request[key].roi for key in keys if key in request]
    roi = rois[0]
    for other in rois[1:]:
        roi = roi.union(other)
    return roi


class BinaryTarget(gp.BatchFilter):
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
        self.gt = gt
        self.mask = mask
        self.target = target
        self.weight = weight
        self.balance_weights = balance_weights
        self.balance_clip = balance_clip

    def setup(self) -> None:
        if self.mask is not None:
            check_same_voxel_size(self, self.gt, self.mask)
        spec = self.spec[self.gt].copy()
        spec.dtype = np.float32
        spec.interpolatable = False
        self.provides(self.target, spec)
        self.provides(self.weight, spec.copy())
        self.enable_autoskip()

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        roi = requested_output_roi(request, (self.target, self.weight))
        deps = gp.BatchRequest()
        deps[self.gt] = gp.ArraySpec(roi=roi)
        if self.mask is not None:
            deps[self.mask] = gp.ArraySpec(roi=roi)
        return deps

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch:
        gt = batch[self.gt]
        target = (gt.data != 0).astype(np.float32)[np.newaxis]
        if self.mask is None:
            weight = np.ones_like(target)
        else:
            weight = (batch[self.mask].data > 0).astype(np.float32)[np.newaxis]
        if self.balance_weights:
            weight = class_balanced_weight(target, weight, self.balance_clip)
        outputs = gp.Batch()
        for key, data in ((self.target, target), (self.weight, weight)):
            spec = self.spec[key].copy()
            spec.roi = gt.spec.roi
            outputs[key] = gp.Array(data, spec)
        return outputs
