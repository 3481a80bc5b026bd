"""Read and write world-unit windows of a zarr array without funlib.persistence.

Segmentation workers are spawned for every stage; funlib.persistence pulls in dask,
xarray and pandas (several seconds per process), while zarr alone is enough to read a
block whose array offset and voxel size the spec already holds.
"""

from __future__ import annotations

import numpy as np
import zarr
from funlib.geometry import Coordinate, Roi


class ZarrWindow:
    """World-unit access to a (z, y, x) or (C, z, y, x) zarr array.

    Args:
        path: the zarr array.
        offset: world offset of its first voxel.
        voxel_size: world units per voxel.
        mode: ``r`` or ``r+``.
    """

    def __init__(self, path: str, offset, voxel_size, mode: str = "r"):
        self.array = zarr.open_array(path, mode=mode)
        self.voxel_size = Coordinate(voxel_size)
        shape = Coordinate(self.array.shape[-3:])
        self.roi = Roi(Coordinate(offset), shape * self.voxel_size)

    def _slices(self, roi: Roi) -> tuple[slice, ...]:
        begin = (roi.begin - self.roi.begin) / self.voxel_size
        end = begin + roi.shape / self.voxel_size
        spatial = tuple(slice(b, e) for b, e in zip(begin, end, strict=True))
        return (slice(None), *spatial) if self.array.ndim == 4 else spatial

    def read(self, roi: Roi) -> np.ndarray:
        """The data in ``roi``, zeros where it leaves the array."""
        shape = (*self.array.shape[:-3], *(roi.shape / self.voxel_size))
        result = np.zeros(shape, dtype=self.array.dtype)
        inside = roi.intersect(self.roi)
        if not inside.empty:
            target = self._slices(inside.shift(self.roi.begin - roi.begin))
            result[target] = self.array[self._slices(inside)]
        return result

    def write(self, roi: Roi, data: np.ndarray) -> None:
        """Write ``data`` covering ``roi`` (which must lie inside the array)."""
        self.array[self._slices(roi)] = data
