"""The base of the target nodes: labels (and a mask) in, a float32 target and weight out."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate, Roi

from voltrain.errors import DataError


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


class LabelTarget(gp.BatchFilter):
    """Provide float32 (channels, z, y, x) ``target`` and ``weight`` arrays, computed from
    the labels ``gt`` and the 0/1 ``mask`` (on the labels' grid; None trusts every voxel).

    A subclass implements ``process`` and returns ``outputs(roi, target, weight)``. A target
    that needs labels beyond the output region (affinities' neighbours, distances up to a
    clip) says how far in ``label_context``: the labels (and, unless ``mask_roi`` says
    otherwise, the mask) are requested that much larger, and the ROI provided shrinks by it.

    Args:
        gt: integer labels (or class ids).
        mask: 0/1 array of trusted voxels, or None.
        target: the array to create.
        weight: the array to create, the per-voxel loss weight.
    """

    def __init__(
        self,
        gt: gp.ArrayKey,
        mask: gp.ArrayKey | None,
        target: gp.ArrayKey,
        weight: gp.ArrayKey,
    ):
        self.gt = gt
        self.mask = mask
        self.target = target
        self.weight = weight

    def label_context(self) -> tuple[Coordinate, Coordinate]:
        """World margins (before, after the output region) of the labels needed."""
        zero = Coordinate((0,) * self.spec[self.gt].voxel_size.dims)
        return zero, zero

    def labels_roi(self, output_roi: Roi) -> Roi:
        """The labels requested for ``output_roi``."""
        before, after = self.label_context()
        return output_roi.grow(before, after)

    def mask_roi(self, output_roi: Roi, labels_roi: Roi) -> Roi:
        """The mask requested for ``output_roi`` (default: as much as the labels)."""
        return labels_roi

    def setup(self) -> None:
        if self.mask is not None:
            check_same_voxel_size(self, self.gt, self.mask)
        spec = self.spec[self.gt].copy()
        if spec.roi is not None:
            before, after = self.label_context()
            spec.roi = spec.roi.grow(-before, -after)
        spec.dtype = np.float32
        spec.interpolatable = False
        self.provides(self.target, spec)
        self.provides(self.weight, spec.copy())
        self.enable_autoskip()

    def output_roi(self, request: gp.BatchRequest) -> Roi:
        """The region of the requested target and weight."""
        return requested_output_roi(request, (self.target, self.weight))

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        roi = self.output_roi(request)
        labels_roi = self.labels_roi(roi)
        deps = gp.BatchRequest()
        deps[self.gt] = gp.ArraySpec(roi=labels_roi)
        if self.mask is not None:
            deps[self.mask] = gp.ArraySpec(roi=self.mask_roi(roi, labels_roi))
        return deps

    def outputs(self, roi: Roi, target: np.ndarray, weight: np.ndarray) -> gp.Batch:
        """The batch of ``target`` and ``weight`` covering ``roi``."""
        batch = gp.Batch()
        for key, data in ((self.target, target), (self.weight, weight)):
            spec = self.spec[key].copy()
            spec.roi = roi
            batch[key] = gp.Array(data, spec)
        return batch
