"""The record of one blockwise stage: which blocks are done, which failed and why.

For a stage directory ``D``::

    D/blocks/<z>_<y>_<x>   an empty file per finished block, named after the world offset
                           of its write ROI; written (atomic rename) after the block's data
    D/failed/<z>_<y>_<x>   the last error of a block that failed, removed on success
    D/logs/                daisy's per-worker stdout and stderr

A marker exists only once its block's output is fully written, so a run killed at any
moment leaves markers for finished blocks only, and a rerun redoes the rest.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from funlib.geometry import Coordinate, Roi

from voltrain.atomic import atomic_write
from voltrain.errors import ConfigError


def tile_roi(roi: Roi, block_shape: Coordinate) -> list[Roi]:
    """Blocks of ``block_shape`` (world units) tiling ``roi`` from its offset; the last block
    on each axis may reach beyond ``roi``."""
    block_shape = Coordinate(block_shape)
    counts = [-(-size // block) for size, block in zip(roi.shape, block_shape, strict=True)]
    return [
        Roi(roi.begin + Coordinate(index) * block_shape, block_shape)
        for index in np.ndindex(*counts)
    ]


def block_name(write_roi: Roi) -> str:
    """A block's file name: the world offset of its write ROI, ``z_y_x``."""
    return "_".join(str(value) for value in write_roi.begin)


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` never exists half-written (a marker or
    table that a rerun recreates, so not fsynced)."""
    payload = data.encode() if isinstance(data, str) else data
    atomic_write(path, lambda file: file.write(payload), durable=False)


class BlockRecord:
    """Done markers, failures and logs of one blockwise stage (see the module docstring).

    Args:
        directory: the stage's directory.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.blocks_dir = self.directory / "blocks"
        self.failed_dir = self.directory / "failed"
        self.logs_dir = self.directory / "logs"

    def reset(self) -> None:
        """Forget every block: markers of earlier work would lie about new work."""
        shutil.rmtree(self.directory, ignore_errors=True)
        for directory in (self.blocks_dir, self.failed_dir, self.logs_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def missing_blocks(self, write_rois: list[Roi]) -> list[Roi]:
        """The blocks among ``write_rois`` without a done marker."""
        done = set(os.listdir(self.blocks_dir)) if self.blocks_dir.is_dir() else set()
        return [roi for roi in write_rois if block_name(roi) not in done]

    def failure(self, write_roi: Roi) -> str | None:
        """The last recorded error of a block, if it failed."""
        path = self.failed_dir / block_name(write_roi)
        return path.read_text().strip() if path.is_file() else None

    def is_done(self, write_roi: Roi) -> bool:
        return (self.blocks_dir / block_name(write_roi)).exists()

    def mark_done(self, write_roi: Roi) -> None:
        write_atomically(self.blocks_dir / block_name(write_roi), "")
        (self.failed_dir / block_name(write_roi)).unlink(missing_ok=True)

    def record_failure(self, write_roi: Roi, message: str) -> None:
        write_atomically(self.failed_dir / block_name(write_roi), message)


class BlockIsDone:
    """daisy ``check_function``: a block is done when its marker exists (picklable)."""

    def __init__(self, directory: str | Path):
        self.directory = str(directory)

    def __call__(self, block) -> bool:
        return BlockRecord(self.directory).is_done(block.write_roi)


def read_output_record(output: str, key: str) -> dict | None:
    """The ``key`` attribute of the zarr group at ``output`` (a blockwise output's record of
    what it holds and whether it is complete), or None: no group, or no such record."""
    import zarr

    try:
        handle = zarr.open(output, mode="r")
    except (FileNotFoundError, KeyError, ValueError):
        return None
    record = handle.attrs.get(key) if isinstance(handle, zarr.Group) else None
    return dict(record) if isinstance(record, dict) else None


def check_output_record(output: str, record: dict | None, identity: dict, what: str) -> None:
    """Raise ``ConfigError`` unless ``record`` says the output at ``output`` holds the
    ``what`` (e.g. ``prediction``) that ``identity`` describes, so a rerun may resume it."""
    if record is None:
        raise ConfigError(
            f"--output {output}: exists and is not a voltrain {what}; choose "
            "another path or pass --overwrite to replace it"
        )
    differing = [key for key, value in identity.items() if record.get(key) != value]
    if differing:
        raise ConfigError(
            f"--output {output}: holds a {what} with another "
            f"{', '.join(differing)}; pass --overwrite to replace it or choose another path"
        )
