"""The output array of a blockwise prediction and its completion record.

For ``--output c.zarr/pred``::

    c.zarr/pred              an OME-NGFF image (``voltrain.io.write``) with
                             attrs["voltrain_predict"] = {"complete": bool, identity ...}
    c.zarr/pred/s0           float32 (channels, z, y, x), one chunk per block output, placed
                             by the input's voxel size and units and the ROI's offset
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
from funlib.persistence import open_ds

from voltrain.blocks.record import (
    BlockRecord,
    check_output_record,
    read_output_record,
    tile_roi,
)
from voltrain.errors import ConfigError
from voltrain.io.write import Placement, create_image, level_path

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
    return tile_roi(spec.roi, spec.block_write_roi.shape)


def prepare_output_array(
    path: str,
    shape: tuple[int, ...],
    offset: Coordinate,
    voxel_size: Coordinate,
    chunk_shape: tuple[int, ...],
    dtype,
    attributes: dict,
    units: list[str] | None = None,
    labels: bool = False,
) -> None:
    """Create an empty OME-NGFF output image at ``path`` (replacing one there), its data
    in ``path/s0``: (channels, z, y, x) when ``shape`` has 4 values, else (z, y, x);
    ``labels`` are uint64. Every blockwise output (predictions, fragments, segmentations)
    is created here, so all carry the same metadata (``voltrain.io.write``)."""
    container, name = split_container(path)
    create_image(
        zarr.open_group(str(container), mode="a", zarr_format=3),
        name,
        shape=shape,
        dtype=dtype,
        placement=Placement.of(Coordinate(voxel_size), offset, units, "--input units"),
        chunk_shape=chunk_shape,
        labels=labels,
        attributes=attributes,
    )


class OutputStore:
    """The output image and its ``.done`` directory (see the module docstring).

    Args:
        output: the output image path, ``container.zarr/name``.
    """

    def __init__(self, output: str):
        self.output = str(output)
        self.array_path = level_path(self.output)
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
        """The ``voltrain_predict`` attribute, or None if the image has none."""
        return read_output_record(self.output, RECORD_KEY)

    def check_resumable(self, spec: PredictionSpec) -> None:
        """Raise ``ConfigError`` unless the existing output is this very prediction."""
        record = self.record()
        if record is not None:  # outputs written before --weights existed are the student's
            record = {"weights": "student", **record}
        check_output_record(self.output, record, spec.identity(), "prediction")

    def create(self, spec: PredictionSpec, labels: bool = False) -> None:
        """Create the empty output image, marked incomplete, and a fresh ``.done`` directory.

        ``labels``: a uint64 (z, y, x) label volume (a segmentation) instead of float32
        channels. Markers of an earlier output at this path would lie about the new one, so
        they go.
        """
        if self.exists():
            self._remove_output()
        self.blocks.reset()
        voxel_size = spec.output_voxel
        spatial_shape = tuple(spec.roi.shape / voxel_size)
        block_shape = tuple(Coordinate(spec.output_shape))
        channels = () if labels else (spec.num_channels,)
        prepare_output_array(
            self.output,
            shape=(*channels, *spatial_shape),
            offset=spec.roi.offset,
            voxel_size=voxel_size,
            chunk_shape=(*channels, *block_shape),
            dtype=np.float32,
            attributes={RECORD_KEY: {"complete": False, **spec.identity()}},
            units=spec.units,
            labels=labels,
        )

    def _remove_output(self) -> None:
        """Remove an earlier output: an array, or an image group, never any other group."""
        handle = zarr.open(self.output, mode="r")
        if isinstance(handle, zarr.Group) and "ome" not in handle.attrs and not self.record():
            raise ConfigError(f"--output {self.output}: is a zarr group, not an image")
        shutil.rmtree(self.output)

    def set_complete(self, complete: bool) -> None:
        handle = zarr.open_group(self.output, mode="r+")
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
        """Write a block's (C, z, y, x) prediction or (z, y, x) labels, cropped to the output
        ROI, then mark it done."""
        if self._array is None:
            self._array = open_ds(self.array_path, mode="r+")
        array = self._array
        inside = write_roi.intersect(array.roi)
        begin = (inside.begin - write_roi.begin) / array.voxel_size
        end = begin + inside.shape / array.voxel_size
        array[inside] = data[(Ellipsis, *(slice(b, e) for b, e in zip(begin, end, strict=True)))]
        self.blocks.mark_done(write_roi)
