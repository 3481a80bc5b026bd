"""Training snapshots: the arrays of one sample at one iteration, written as zarr every
``snapshot_interval`` iterations by ``SnapshotSchedule`` (as checkpoints are by
``CheckpointSchedule``: both are ``voltrain.run.schedule.Every``).

Layout: ``snapshots.zarr/<iteration>/<array>``, each array an OME-NGFF image written by
``voltrain.io.write`` (its data in ``<array>/s0``): compressed, placed by voxel size and
offset in the training data's units, labels (``gt``) as uint64. Raw, labels and predictions
thus overlay in neuroglancer and reopen with OME readers or with
``funlib.persistence.open_ds("…/<array>/s0")``.

A snapshot group appears whole or not at all: it is written under a temporary name in the
container and renamed to ``<iteration>`` once every array is written, as checkpoints are.
A write that fails midway leaves nothing behind; temporaries left by a killed process are
removed by the next snapshot.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from voltrain import distributed
from voltrain.io.write import Placement, write_image
from voltrain.run.schedule import Every

if TYPE_CHECKING:
    # The type only: the trainers import this module to snapshot.
    from voltrain.trainers.stats import TrainingIterationStats

LABEL_ARRAYS = frozenset({"gt"})
TEMPORARY_PREFIX = ".tmp-"


@dataclass
class SnapshotArray:
    """One array to snapshot: data with optional leading channel axis, and its placement."""

    data: np.ndarray
    offset: Sequence[int]
    voxel_size: Sequence[int]


def write_snapshot(
    container: str | Path,
    iteration: int,
    arrays: Mapping[str, SnapshotArray],
    units: Sequence[str] | None = None,
) -> Path:
    """Write ``arrays`` to ``container/<iteration>/<name>`` atomically; returns the group's
    path. ``units`` are the spatial axes' units (default: nanometers)."""
    container = Path(container)
    zarr.open_group(str(container), mode="a", zarr_format=3)
    _remove_temporaries(container)
    temporary = container / f"{TEMPORARY_PREFIX}{iteration}-{uuid.uuid4().hex[:8]}"
    try:
        group = zarr.open_group(str(temporary), mode="w", zarr_format=3)
        for name, array in arrays.items():
            placement = Placement.of(array.voxel_size, array.offset, units)
            write_image(group, name, array.data, placement, labels=name in LABEL_ARRAYS)
        final = container / str(iteration)
        _replace_directory(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return final


def _replace_directory(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; an existing ``target`` (a rewritten iteration) is
    moved aside first and removed after."""
    if not target.exists():
        os.rename(source, target)
        return
    old = target.with_name(f"{TEMPORARY_PREFIX}old-{target.name}-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    os.rename(source, target)
    shutil.rmtree(old, ignore_errors=True)


def _remove_temporaries(container: Path) -> None:
    for entry in container.iterdir():
        if entry.name.startswith(TEMPORARY_PREFIX) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


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
        units = self._trainer.units if self._trainer is not None else None
        path = write_snapshot(self.container, stats.iteration, stats.snapshot, units)
        arrays = {name: array.data for name, array in stats.snapshot.items()}
        if self._trainer is not None:
            self._trainer.notify_snapshot(stats.iteration, path, arrays)
