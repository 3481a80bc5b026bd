"""Training snapshots: the arrays of one sample at one iteration, written as zarr every
``snapshot_interval`` iterations by ``SnapshotSchedule`` (as checkpoints are by
``CheckpointSchedule``: both are ``voltrain.run.schedule.Every``).

Layout: ``snapshots.zarr/<iteration>/<array>``. Every array is compressed (zstd through
blosc) and carries ``voxel_size``, ``offset`` (world units, spatial axes only),
``axis_names``, ``units`` and ``types`` in the attributes funlib.persistence reads, so raw,
labels and predictions overlay in neuroglancer and reopen with ``open_ds``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from voltrain import distributed
from voltrain.run.schedule import Every

if TYPE_CHECKING:
    # The type only: the trainers import this module to snapshot.
    from voltrain.trainers.stats import TrainingIterationStats

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


class SnapshotSchedule(Every):
    """Writes the first sample of every ``interval``-th iteration to ``container`` (rank 0
    only) and tells the trainer's callbacks (``on_snapshot``).

    Args:
        container: the snapshots' zarr container, ``<run>/snapshots.zarr``.
        interval: iterations between snapshots (0: none).
    """

    def __init__(self, container: str | Path, interval: int):
        super().__init__(interval)
        self.container = Path(container)
        self._trainer: Any = None

    def wants_snapshot(self, iteration: int) -> bool:
        return distributed.is_main() and self.due_at(iteration)

    def on_train_begin(self, trainer: Any) -> None:
        super().on_train_begin(trainer)
        self._trainer = trainer

    def write(self, stats: TrainingIterationStats) -> None:
        if stats.snapshot is None:
            return
        path = write_snapshot(self.container, stats.iteration, stats.snapshot)
        arrays = {name: array.data for name, array in stats.snapshot.items()}
        if self._trainer is not None:
            self._trainer.notify_snapshot(stats.iteration, path, arrays)
