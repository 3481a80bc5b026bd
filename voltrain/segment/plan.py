"""Check everything a segmentation needs before anything is written, and build its spec.

Each problem a user can cause is a one-line ``VoltrainError`` naming the input: the
``--input`` affinities, the ``--mask``, the ``--output``, a threshold, a config key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from funlib.persistence import Array

from voltrain.data import open_array
from voltrain.errors import ConfigError, DataError
from voltrain.io.read import open_source
from voltrain.io.write import source_units
from voltrain.predict.output import split_container
from voltrain.segment.config import SegmentConfig, check_thresholds
from voltrain.segment.spec import SegmentSpec


def open_affinities(
    path: str,
    neighborhood: Sequence[Sequence[int]],
    key: str = "--input",
    channels: Sequence[int] | None = None,
    num_channels: int | None = None,
):
    """Open (C, z, y, x) affinities whose channels fit the neighbourhood, or raise.

    A multitask's prediction has more channels: ``num_channels`` of them, of which
    ``channels`` hold the affinities. None: every channel is an affinity.
    """
    if not Path(path).exists():
        raise DataError(f"{key} '{path}': no such array")
    array = open_source(path, f"{key} '{path}'")
    if len(array.shape) != 4 or array.voxel_size.dims != 3:
        raise DataError(
            f"{key} '{path}': expected (channels, z, y, x) affinities with a 3D voxel size, "
            f"got shape {array.shape}"
        )
    if channels is not None:
        if array.shape[0] != num_channels:
            raise DataError(
                f"{key} '{path}': {array.shape[0]} channels, but the task predicts "
                f"{num_channels} (affinities in channels {min(channels)}-{max(channels)})"
            )
    elif array.shape[0] != len(neighborhood):
        raise DataError(
            f"{key} '{path}': {array.shape[0]} affinity channels, but task.neighborhood has "
            f"{len(neighborhood)} offsets"
        )
    if array.dtype not in (np.float32, np.float64, np.float16, np.uint8):
        raise DataError(f"{key} '{path}': dtype {array.dtype}; expected float in [0, 1] or uint8")
    return array


def check_same_grid(array: Array, reference: Array, key: str, path: str, ref_key: str) -> None:
    """Raise unless ``array`` has the voxel size of ``reference`` and covers its ROI."""
    if array.voxel_size != reference.voxel_size:
        raise DataError(
            f"{key} '{path}': voxel size {tuple(array.voxel_size)} differs from the "
            f"{ref_key} voxel size {tuple(reference.voxel_size)}"
        )
    if not array.roi.contains(reference.roi):
        raise DataError(
            f"{key} '{path}': ROI {array.roi} does not cover the {ref_key} ROI {reference.roi}"
        )


def check_mask_not_empty(mask: Array, key: str, path: str) -> None:
    """Raise if no voxel of the mask is set (dask reads it chunk by chunk)."""
    if not bool(mask.data.any().compute()):
        raise DataError(f"{key} '{path}': the mask is empty (no voxel is set)")


def plan_segmentation(
    neighborhood: Sequence[Sequence[int]],
    settings: SegmentConfig,
    input_path: str,
    output_path: str,
    mask_path: str | None = None,
    thresholds: Sequence[float] | None = None,
    block_shape: Sequence[int] | None = None,
    channels: Sequence[int] | None = None,
    num_channels: int | None = None,
) -> SegmentSpec:
    """Check the affinities, mask, output path and settings; return the job's spec.

    ``channels``: which of the input's ``num_channels`` channels are the affinities
    (default: the input holds affinities only).
    """
    if channels is not None and len(channels) == num_channels:
        channels = None  # a plain affinities prediction
    updates = {}
    if thresholds is not None:
        try:
            updates["thresholds"] = check_thresholds(thresholds)
        except ValueError as error:
            raise ConfigError(f"--thresholds: {error}") from None
    if block_shape is not None:
        if len(block_shape) != 3 or any(size <= 0 for size in block_shape):
            raise ConfigError(f"--block-shape {list(block_shape)}: expected 3 positive voxels")
        updates["block_shape"] = list(block_shape)
    settings = settings.model_copy(update=updates)
    input_path = str(Path(input_path).resolve())
    affinities = open_affinities(input_path, neighborhood, "--input", channels, num_channels)
    roi = affinities.roi
    mask_path = str(Path(mask_path).resolve()) if mask_path else None
    if mask_path:
        mask = open_array(mask_path, "--mask")
        check_same_grid(mask, affinities, "--mask", mask_path, "--input")
        check_mask_not_empty(mask, "--mask", mask_path)
    output_path = str(Path(output_path).resolve())
    split_container(output_path)
    if output_path in (input_path, mask_path):
        raise ConfigError(f"--output '{output_path}': is an input array")
    volume_shape = roi.shape / affinities.voxel_size
    if settings.block_shape is None:
        settings = settings.model_copy(update={"block_shape": list(volume_shape)})
    return SegmentSpec(
        input=input_path,
        mask=mask_path,
        mask_offset=list(mask.roi.offset) if mask_path else None,
        output=output_path,
        neighborhood=[list(map(int, offset)) for offset in neighborhood],
        channels=None if channels is None else [int(c) for c in channels],
        voxel_size=list(affinities.voxel_size),
        roi_offset=list(roi.offset),
        roi_shape=list(roi.shape),
        affinity_scale=1 / 255 if affinities.dtype == np.uint8 else 1.0,
        units=source_units(affinities, "--input"),
        settings=settings,
    )
