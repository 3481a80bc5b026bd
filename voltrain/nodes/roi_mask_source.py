"""A gunpowder source for the mask of a dataset that has none: ones inside a ROI."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate, Roi


class RoiMaskSource(gp.BatchProvider):
    """Provide a uint8 mask that is 1 inside ``roi`` and 0 outside, for any request.

    Used when a dataset gives no mask: every gt voxel is trusted, padding is not.

    Args:
        key: the ArrayKey of the mask.
        roi: the world ROI where the mask is 1 (the gt ROI).
        voxel_size: the voxel size of the mask (the gt's).
    """

    def __init__(self, key: gp.ArrayKey, roi: Roi, voxel_size: Coordinate):
        self.key = key
        self.roi = roi
        self.voxel_size = voxel_size

    def setup(self):
        dims = self.voxel_size.dims
        spec = gp.ArraySpec(
            roi=Roi((None,) * dims, (None,) * dims),
            voxel_size=self.voxel_size,
            interpolatable=False,
            dtype=np.uint8,
        )
        self.provides(self.key, spec)

    def provide(self, request: gp.BatchRequest) -> gp.Batch:
        roi = request[self.key].roi
        data = np.zeros(roi.shape / self.voxel_size, dtype=np.uint8)
        inside = roi.intersect(self.roi)
        if not inside.empty:
            begin = (inside.begin - roi.offset) / self.voxel_size
            end = (inside.end - roi.offset) / self.voxel_size
            data[tuple(slice(b, e) for b, e in zip(begin, end, strict=True))] = 1
        spec = gp.ArraySpec(
            roi=roi, voxel_size=self.voxel_size, interpolatable=False, dtype=np.uint8
        )
        batch = gp.Batch()
        batch[self.key] = gp.Array(data, spec)
        return batch
