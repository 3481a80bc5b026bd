"""Writing training snapshots: the arrays of one sample at one iteration, as zarr.

Layout: ``snapshots.zarr/<iteration>/<array>``. Every array is compressed (zstd through
blosc) and carries ``voxel_size``, ``offset`` (world units, spatial axes only),
``axis_names``, ``units`` and ``types`` in the attributes funlib.persistence reads, so raw,
labels and predictions overlay in neuroglancer and reopen with ``open_ds``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


@dataclass
class SnapshotArray:
    """One array to snapshot: data with optional leading channel axis, and its placement."""

    data: np.ndarray
    offset: Sequence[int]
    voxel_size: Sequence[int]


def write_snapshot(
    container: str | Path, iteration: int, arrays: Mapping[str, SnapshotArray]
) -> Path:
    """Write ``arrays`` to ``container/<iteration>/<name>``; returns the group's path."""
    root = zarr.open_group(str(container), mode="a")
    group = root.require_group(str(iteration))
    for name, array in arrays.items():
        spatial_dims = len(array.voxel_size)
        channel_dims = array.data.ndim - spatial_dims
        axis_names = [f"c{i}^" for i in range(channel_dims)] + ["z", "y", "x"][-spatial_dims:]
        attributes = {
            "voxel_size": [int(v) for v in array.voxel_size],
            "offset": [int(o) for o in array.offset],
            "axis_names": axis_names,
            "units": ["nm"] * spatial_dims,
            "types": ["channel"] * channel_dims + ["space"] * spatial_dims,
        }
        group.create_array(
            name,
            data=np.ascontiguousarray(array.data),
            compressors=COMPRESSOR,
            attributes=attributes,
            overwrite=True,
        )
    return Path(container) / str(iteration)
