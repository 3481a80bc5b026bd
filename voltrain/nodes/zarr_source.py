"""A gunpowder source that reads a funlib.persistence array and pads outside it."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array
from gunpowder.profiling import Timing

from voltrain.faults.chunks import unreadable_chunk
from voltrain.kernels.chunk_cache import ChunkCache


class ZarrSource(gp.BatchProvider):
    """Provide one array from a zarr-backed ``funlib.persistence.Array``, padded to infinity.

    Reads go straight to the zarr array (not through dask), so loader processes never start
    dask's thread pool and each request reads exactly the voxels it needs, once. Requests may
    reach outside the array's valid ROI: those voxels get ``pad_value``. This replaces a
    separate ``Pad`` node and its extra copy. With a ``chunk_cache``, decoded chunks are
    kept for later requests. The read time is recorded in the batch's profiling stats
    (gunpowder times filters, not sources).

    Args:
        key: the ArrayKey to provide.
        array: the opened array (voxel size and offset from its metadata); leading channel
            axes, as in (c, z, y, x), are provided whole.
        valid_roi: the world ROI that holds data; defaults to the array's ROI. Must lie in it.
        pad_value: value for voxels outside ``valid_roi``.
        interpolatable: whether the array may be interpolated (raw) or not (labels, masks).
        chunk_cache: a cache of decoded chunks (shared by the sources of a loader worker),
            or None to decode every read afresh.
    """

    def __init__(
        self,
        key: gp.ArrayKey,
        array: Array,
        valid_roi: Roi | None = None,
        pad_value: int | float = 0,
        interpolatable: bool | None = None,
        chunk_cache: ChunkCache | None = None,
    ):
        self.key = key
        self.array = array
        self.valid_roi = array.roi if valid_roi is None else valid_roi
        if not array.roi.contains(self.valid_roi):
            raise ValueError(f"valid_roi {self.valid_roi} is outside the array ROI {array.roi}")
        self.pad_value = pad_value
        if interpolatable is None:
            interpolatable = np.issubdtype(array.dtype, np.floating) or array.dtype == np.uint8
        self.interpolatable = interpolatable
        self.chunk_cache = chunk_cache

    def setup(self):
        dims = self.array.voxel_size.dims
        spec = gp.ArraySpec(
            roi=Roi((None,) * dims, (None,) * dims),
            voxel_size=self.array.voxel_size,
            interpolatable=self.interpolatable,
            dtype=self.array.dtype,
        )
        self.provides(self.key, spec)

    def provide(self, request: gp.BatchRequest) -> gp.Batch:
        timing = Timing(self, "provide")
        timing.start()
        roi = request[self.key].roi
        voxel_size = self.array.voxel_size
        if not roi.snap_to_grid(voxel_size) == roi:
            raise ValueError(f"{self.key}: requested ROI {roi} is not aligned to {voxel_size}")
        inside = roi.intersect(self.valid_roi)
        # leading channel axes, e.g. (c, z, y, x) raw, are read whole
        channels = tuple(self.array.shape[: self.array.channel_dims])
        shape = channels + tuple(roi.shape / voxel_size)
        if inside == roi:
            data = np.empty(shape, dtype=self.array.dtype)
        else:
            data = np.full(shape, self.pad_value, dtype=self.array.dtype)
        if not inside.empty:
            whole = tuple(slice(0, c) for c in channels)
            self._read(
                whole + _voxel_slices(inside, self.array.roi.offset, voxel_size),
                data[whole + _voxel_slices(inside, roi.offset, voxel_size)],
            )
        spec = gp.ArraySpec(
            roi=roi,
            voxel_size=voxel_size,
            interpolatable=self.interpolatable,
            dtype=self.array.dtype,
        )
        batch = gp.Batch()
        batch[self.key] = gp.Array(data, spec)
        timing.stop()
        batch.profiling_stats.add(timing)
        return batch

    def _read(self, source: tuple[slice, ...], out: np.ndarray) -> None:
        stored = self.array._source_data
        try:
            if self.chunk_cache is not None and hasattr(stored, "chunks"):
                self.chunk_cache.read(id(self), stored, source, out)
            else:
                out[...] = stored[source]
        except Exception as error:
            # zarr's codec errors name neither the array nor the chunk
            raise unreadable_chunk(stored, source, error) from None


def _voxel_slices(roi: Roi, origin: Coordinate, voxel_size: Coordinate) -> tuple[slice, ...]:
    """Slices selecting ``roi`` in an array whose first voxel sits at ``origin``."""
    begin = (roi.begin - origin) / voxel_size
    end = (roi.end - origin) / voxel_size
    return tuple(slice(b, e) for b, e in zip(begin, end, strict=True))
