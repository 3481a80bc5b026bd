"""Affinity training target from a label volume."""

from __future__ import annotations

from collections.abc import Sequence

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate

from voltrain.nodes.binary_target import DEFAULT_BALANCE_CLIP, class_balanced_weight
from voltrain.nodes.label_target import LabelTarget


def neighborhood_context(neighborhood: Sequence[Sequence[int]]) -> tuple[Coordinate, Coordinate]:
    """Voxels of labels needed before and after an output region, per axis."""
    offsets = np.asarray(neighborhood, dtype=np.int64)
    before = Coordinate(np.maximum(0, -offsets.min(axis=0)))
    after = Coordinate(np.maximum(0, offsets.max(axis=0)))
    return before, after


class AffinityTarget(LabelTarget):
    """Add affinities and their loss weight, both float32 (channels, z, y, x).

    Channel ``c`` at voxel ``v`` is 1 iff ``gt[v] == gt[v + offset_c]`` and ``gt[v] != 0``.
    Its weight is ``mask[v] * mask[v + offset_c]``: an affinity is trusted only if both of
    its voxels are. Labels and mask are requested larger than the output by the
    neighbourhood's reach so that affinities on the output border see their true
    neighbours; upstream must be able to provide that (e.g. ``gp.Pad(gt, None)``, whose
    zeros read as background and, for the mask, as untrusted).

    Args:
        gt: integer labels, 0 = background.
        mask: 0/1 array of trusted voxels, on the labels' voxel grid; None trusts all.
        target: the array to create, one channel per offset.
        weight: the array to create, the per-affinity loss weight.
        neighborhood: (z, y, x) voxel offsets, one per channel.
        balance_weights: per channel, give positive and negative affinities half of the
            trusted weight each (see ``class_balanced_weight``).
        balance_clip: (low, high) bounds of the positive fraction used for balancing;
            None does not clip.
    """

    def __init__(
        self,
        gt: gp.ArrayKey,
        mask: gp.ArrayKey | None,
        target: gp.ArrayKey,
        weight: gp.ArrayKey,
        neighborhood: Sequence[Sequence[int]],
        balance_weights: bool = True,
        balance_clip: tuple[float, float] | None = DEFAULT_BALANCE_CLIP,
    ):
        offsets = np.asarray(neighborhood, dtype=np.int64)
        if offsets.ndim != 2 or offsets.shape[1] != 3 or not offsets.any(axis=1).all():
            raise ValueError(f"expected nonzero (z, y, x) offsets, got {neighborhood}")
        super().__init__(gt, mask, target, weight)
        self.neighborhood = [Coordinate(offset) for offset in offsets]
        self.balance_weights = balance_weights
        self.balance_clip = balance_clip
        self.context_before, self.context_after = neighborhood_context(offsets)

    def label_context(self) -> tuple[Coordinate, Coordinate]:
        voxel_size = self.spec[self.gt].voxel_size
        return self.context_before * voxel_size, self.context_after * voxel_size

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch:
        gt = batch[self.gt]
        voxel_size = gt.spec.voxel_size
        output_roi = gt.spec.roi.grow(
            -self.context_before * voxel_size, -self.context_after * voxel_size
        )
        mask = None if self.mask is None else batch[self.mask].data > 0
        target, weight = self._affinities(gt.data, mask, (output_roi.shape / voxel_size))
        if self.balance_weights:
            weight = class_balanced_weight(target, weight, self.balance_clip)
        return self.outputs(output_roi, target, weight)

    def _affinities(
        self, labels: np.ndarray, mask: np.ndarray | None, shape: Coordinate
    ) -> tuple[np.ndarray, np.ndarray]:
        """Affinities and unbalanced weights on the output region of the enlarged arrays."""

        def shifted(array: np.ndarray, offset: Coordinate) -> np.ndarray:
            start = self.context_before + offset
            return array[tuple(slice(b, b + s) for b, s in zip(start, shape, strict=True))]

        zero = Coordinate((0, 0, 0))
        centre_labels = shifted(labels, zero)
        foreground = centre_labels != 0
        target = np.empty((len(self.neighborhood), *shape), dtype=np.float32)
        weight = np.empty_like(target)
        centre_mask = None if mask is None else shifted(mask, zero)
        for channel, offset in enumerate(self.neighborhood):
            np.logical_and(
                centre_labels == shifted(labels, offset), foreground, out=target[channel]
            )
            if mask is None:
                weight[channel] = 1.0
            else:
                np.logical_and(centre_mask, shifted(mask, offset), out=weight[channel])
        return target, weight
