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

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds, prepare_ds

from voltrain.errors import ConfigError
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
    roi = spec.roi
    block_shape = spec.block_write_roi.shape
    counts = [-(-size // block) for size, block in zip(roi.shape, block_shape, strict=True)]
    rois = []
    for index in np.ndindex(*counts):
        rois.append(Roi(roi.begin + Coordinate(index) * block_shape, block_shape))
    return rois


def _block_name(write_roi: Roi) -> str:
    return "_".join(str(value) for value in write_roi.begin)


class OutputStore:
    """The output array and its ``.done`` directory (see the module docstring).

    Args:
        output: the output array path, ``container.zarr/name``.
    """

    def __init__(self, output: str):
        self.output = str(output)
        self.container, self.name = split_container(self.output)
        self.done_dir = Path(self.output + ".done")
        self.blocks_dir = self.done_dir / "blocks"
        self.failed_dir = self.done_dir / "failed"
        self.logs_dir = self.done_dir / "logs"
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
        shutil.rmtree(self.done_dir, ignore_errors=True)
        group = zarr.open_group(str(self.container), mode="a")
        parent = self.name.rpartition("/")[0]
        if parent:
            group.require_group(parent)
        block_shape = Coordinate(spec.output_shape)
        prepare_ds(
            self.output,
            shape=(spec.num_channels, *(spec.roi.shape / spec.output_voxel)),
            offset=spec.roi.offset,
            voxel_size=spec.output_voxel,
            axis_names=["c^", "z", "y", "x"],
            types=["channel", "space", "space", "space"],
            chunk_shape=(spec.num_channels, *block_shape),
            dtype=np.float32,
            mode="w",
            custom_metadata={RECORD_KEY: {"complete": False, **spec.identity()}},
        )
        for directory in (self.blocks_dir, self.failed_dir, self.logs_dir):
            directory.mkdir(parents=True, exist_ok=True)

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
        done = set(os.listdir(self.blocks_dir)) if self.blocks_dir.is_dir() else set()
        return [roi for roi in write_rois if _block_name(roi) not in done]

    def failure(self, write_roi: Roi) -> str | None:
        """The last recorded error of a block, if it failed."""
        path = self.failed_dir / _block_name(write_roi)
        return path.read_text().strip() if path.is_file() else None

    # --- the workers' side -------------------------------------------------------------

    def is_done(self, write_roi: Roi) -> bool:
        return (self.blocks_dir / _block_name(write_roi)).exists()

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
        _write_atomically(self.blocks_dir / _block_name(write_roi), "")
        (self.failed_dir / _block_name(write_roi)).unlink(missing_ok=True)

    def record_failure(self, write_roi: Roi, message: str) -> None:
        _write_atomically(self.failed_dir / _block_name(write_roi), message)


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that ``path`` never exists half-written."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class BlockIsDone:
    """daisy ``check_function``: a block is done when its marker exists (picklable)."""

    def __init__(self, output: str):
        self.output = output
        self._store: OutputStore | None = None

    def __call__(self, block) -> bool:
        if self._store is None:
            self._store = OutputStore(self.output)
        return self._store.is_done(block.write_roi)

    def __getstate__(self):
        return {"output": self.output, "_store": None}
