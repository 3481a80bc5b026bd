"""The output array of a blockwise prediction and its completion record.

For ``--output c.zarr/pred``::

    c.zarr/pred              float32 (channels, z, y, x), one chunk per block output, with
                             attrs["voltrain_predict"] = {"complete": bool, identity ...}
    c.zarr/pred.done/
        blocks/<z>_<y>_<x>   an empty file per finished block, named after the world
                             offset of its output; written (atomic rename) after the
                             block's data
        failed/<z>_<y>_<x>   the last error of a block that failed, removed on success
        logs/                daisy's per-worker stdout and stderr
        worker.json          the PredictionSpec, read by ``voltrain predict-worker``

A marker exists only once its block's data is fully written, so a run killed at any moment
leaves markers for finished blocks only, and a rerun redoes the rest. ``complete`` becomes
true only once every block has a marker; an array with ``complete: false`` is a prediction
in progress (or an interrupted one), whatever its chunks hold.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds, prepare_ds

from voltrain.blocks.record import BlockRecord, tile_rois
from voltrain.errors import ConfigError

if TYPE_CHECKING:  # the spec pulls in torch; segmentation workers create arrays here too
    from voltrain.predict.spec import PredictionSpec

RECORD_KEY = "voltrain_predict"


def split_container(path: str, key: str = "--output") -> tuple[Path, str]:
    """Split ``c.zarr/a/b`` into the container ``c.zarr`` and the array name ``a/b``."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if part.endswith(".zarr"):
            inner = "/".join(parts[i + 1 :])
            if not inner:
                break
            return Path(*parts[: i + 1]), inner
    raise ConfigError(
        f"{key} '{path}': expected an array inside a zarr container, e.g. predictions.zarr/pred"
    )


def block_write_rois(spec: PredictionSpec) -> list[Roi]:
    """The output ROI of every block, tiling the ROI from its offset (the last may overhang)."""
    return tile_rois(spec.roi, spec.block_write_roi.shape)


def prepare_output_array(
    path: str,
    shape: tuple[int, ...],
    offset: Coordinate,
    voxel_size: Coordinate,
    chunk_shape: tuple[int, ...],
    dtype,
    custom_metadata: dict,
) -> None:
    """Create an empty output array (replacing one at ``path``): (channels, z, y, x) when
    ``shape`` has 4 values, else (z, y, x). Every blockwise output (predictions,
    fragments, segmentations) is created here, so all carry the same metadata."""
    channels = len(shape) == 4
    prepare_ds(
        path,
        shape=shape,
        offset=offset,
        voxel_size=voxel_size,
        axis_names=["c^", "z", "y", "x"] if channels else ["z", "y", "x"],
        types=["channel", "space", "space", "space"] if channels else ["space"] * 3,
        chunk_shape=chunk_shape,
        dtype=dtype,
        mode="w",
        custom_metadata=custom_metadata,
    )


class OutputStore:
    """The output array and its ``.done`` directory (see the module docstring).

    Args:
        output: the output array path, ``container.zarr/name``.
    """

    def __init__(self, output: str):
        self.output = str(output)
        self.container, self.name = split_container(self.output)
        self.done_dir = Path(self.output + ".done")
        self.blocks = BlockRecord(self.done_dir)
        self.logs_dir = self.blocks.logs_dir
        self.worker_spec = self.done_dir / "worker.json"
        self._array = None

    # --- the driver's side -------------------------------------------------------------

    def exists(self) -> bool:
        return Path(self.output).exists()

    def record(self) -> dict | None:
        """The ``voltrain_predict`` attribute, or None if the array has none."""
        try:
            handle = zarr.open(self.output, mode="r")
        except (FileNotFoundError, KeyError, ValueError):
            return None
        if not isinstance(handle, zarr.Array):
            return None
        record = handle.attrs.get(RECORD_KEY)
        return dict(record) if isinstance(record, dict) else None

    def check_resumable(self, spec: PredictionSpec) -> None:
        """Raise ``ConfigError`` unless the existing output is this very prediction."""
        record = self.record()
        if record is None:
            raise ConfigError(
                f"--output {self.output}: exists and is not a voltrain prediction; choose "
                "another path or pass --overwrite to replace it"
            )
        differing = [key for key, value in spec.identity().items() if record.get(key) != value]
        if differing:
            raise ConfigError(
                f"--output {self.output}: holds a prediction with another "
                f"{', '.join(differing)}; pass --overwrite to replace it or choose another path"
            )

    def create(self, spec: PredictionSpec) -> None:
        """Create the empty output array, marked incomplete, and a fresh ``.done`` directory.

        Markers of an earlier array at this path would lie about the new one, so they go.
        """
        if self.exists():
            self._remove_array()
        self.blocks.reset()
        group = zarr.open_group(str(self.container), mode="a")
        parent = self.name.rpartition("/")[0]
        if parent:
            group.require_group(parent)
        prepare_output_array(
            self.output,
            shape=(spec.num_channels, *(spec.roi.shape / Coordinate(spec.voxel_size))),
            offset=spec.roi.offset,
            voxel_size=Coordinate(spec.voxel_size),
            chunk_shape=(spec.num_channels, *Coordinate(spec.output_shape)),
            dtype=np.float32,
            custom_metadata={RECORD_KEY: {"complete": False, **spec.identity()}},
        )

    def _remove_array(self) -> None:
        handle = zarr.open(self.output, mode="r")
        if not isinstance(handle, zarr.Array):
            raise ConfigError(f"--output {self.output}: is a zarr group, not an array")
        shutil.rmtree(self.output)

    def set_complete(self, complete: bool) -> None:
        handle = zarr.open_array(self.output, mode="r+")
        record = dict(handle.attrs[RECORD_KEY])
        record["complete"] = complete
        handle.attrs[RECORD_KEY] = record

    def is_complete(self) -> bool:
        record = self.record()
        return bool(record and record.get("complete"))

    def missing_blocks(self, write_rois: list[Roi]) -> list[Roi]:
        """The blocks among ``write_rois`` without a done marker."""
        return self.blocks.missing_blocks(write_rois)

    # --- the workers' side -------------------------------------------------------------

    def write_block(self, write_roi: Roi, data: np.ndarray) -> None:
        """Write a block's (C, z, y, x) prediction, cropped to the output ROI, then mark it
        done."""
        if self._array is None:
            self._array = open_ds(self.output, mode="r+")
        array = self._array
        inside = write_roi.intersect(array.roi)
        begin = (inside.begin - write_roi.begin) / array.voxel_size
        end = begin + inside.shape / array.voxel_size
        array[inside] = data[(slice(None), *(slice(b, e) for b, e in zip(begin, end, strict=True)))]
        self.blocks.mark_done(write_roi)
