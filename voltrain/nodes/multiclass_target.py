"""One-hot class training target from a class-id volume (e.g. organelles)."""

from __future__ import annotations

from collections.abc import Sequence

import gunpowder as gp
import numpy as np

from voltrain.errors import DataError
from voltrain.nodes.label_target import LabelTarget


def one_hot_classes(
    classes: np.ndarray,
    trusted: np.ndarray | None,
    class_weights: np.ndarray,
    ignore_label: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """One-hot target (C, ...) of ``classes`` and its per-voxel weight (1, ...), float32.

    A voxel's weight is ``class_weights`` of its class where ``trusted`` (None: all);
    voxels of ``ignore_label`` get weight 0 and an all-zero target. ``classes`` must hold
    only 0..C-1 and ``ignore_label``: other values raise ``ValueError``.
    """
    num_classes = len(class_weights)
    ignored = np.zeros(classes.shape, dtype=bool)
    if ignore_label is not None:
        ignored = classes == ignore_label
    known = (classes >= 0) & (classes < num_classes)
    unknown = ~(known | ignored)
    if unknown.any():
        values = np.unique(classes[unknown])[:5].tolist()
        raise ValueError(f"class ids {values} outside 0..{num_classes - 1}")
    index = np.where(ignored, 0, classes).astype(np.intp)
    target = np.zeros((num_classes, *classes.shape), dtype=np.float32)
    for class_id in range(num_classes):
        target[class_id] = (index == class_id) & ~ignored
    weight = np.asarray(class_weights, dtype=np.float32)[index]
    weight[ignored] = 0
    if trusted is not None:
        weight[~trusted] = 0
    return target, weight[np.newaxis]


class MulticlassTarget(LabelTarget):
    """Add a one-hot class target, float32 (C, z, y, x), and its weight, float32
    (1, z, y, x).

    Args:
        gt: integer class ids, 0..C-1 (0 = background), and ``ignore_label``.
        mask: 0/1 array of trusted voxels, on the labels' voxel grid; None trusts all.
        target: the array to create, channel c is 1.0 where gt == c.
        weight: the array to create: the class weight of each voxel's class where the
            mask trusts it, 0 on ``ignore_label`` and untrusted voxels.
        class_weights: one weight per class; its length is the number of classes C.
        ignore_label: class id without a target, or None.
    """

    def __init__(
        self,
        gt: gp.ArrayKey,
        mask: gp.ArrayKey | None,
        target: gp.ArrayKey,
        weight: gp.ArrayKey,
        class_weights: Sequence[float],
        ignore_label: int | None = None,
    ):
        super().__init__(gt, mask, target, weight)
        self.class_weights = np.asarray(class_weights, dtype=np.float32)
        self.ignore_label = ignore_label

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch:
        gt = batch[self.gt]
        trusted = None if self.mask is None else batch[self.mask].data > 0
        try:
            target, weight = one_hot_classes(
                gt.data, trusted, self.class_weights, self.ignore_label
            )
        except ValueError as error:
            raise DataError(
                f"{self.gt} holds {error}: raise task.num_classes or set task.ignore_label"
            ) from None
        return self.outputs(gt.spec.roi, target, weight)
