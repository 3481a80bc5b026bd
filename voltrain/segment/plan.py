"""Check everything a segmentation needs before anything is written, and build its spec.

Each problem a user can cause is a one-line ``VoltrainError`` naming the input: the
``--input`` affinities, the ``--mask``, the ``--output``, a threshold, a config key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr
from funlib.persistence import Array, open_ds

from voltrain.data import open_array
from voltrain.errors import ConfigError, DataError
from voltrain.predict.output import split_container
from voltrain.segment.config import SegmentConfig, check_thresholds
from voltrain.segment.spec import SegmentSpec


def open_affinities(path: str, neighborhood: Sequence[Sequence[int]], key: str = "--input"):
    """Open (C, z, y, x) affinities whose channels fit the neighbourhood, or raise."""
    if not Path(path).exists():
        raise DataError(f"{key} '{path}': no such array")
    try:
        handle = zarr.open(path, mode="r")
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise DataError(f"{key} '{path}': no zarr array ({error})") from None
    if not isinstance(handle, zarr.Array):
        raise DataError(f"{key} '{path}': is a zarr group, not an array")
    if "voxel_size" not in handle.attrs and "multiscales" not in handle.attrs:
        raise DataError(f"{key} '{path}': has no voxel size (attrs['voxel_size'])")
    try:
        array = open_ds(path, mode="r")
    except Exception as error:  # malformed metadata: report it against the input
        raise DataError(f"{key} '{path}': cannot read array metadata: {error}") from None
    if len(array.shape) != 4 or array.voxel_size.dims != 3:
        raise DataError(
            f"{key} '{path}': expected (channels, z, y, x) affinities with a 3D voxel size, "
            f"got shape {array.shape}"
        )
    if array.shape[0] != len(neighborhood):
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
) -> SegmentSpec:
    """Check the affinities, mask, output path and settings; return the job's spec."""
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
    affinities = open_affinities(input_path, neighborhood)
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
        voxel_size=list(affinities.voxel_size),
        roi_offset=list(roi.offset),
        roi_shape=list(roi.shape),
        affinity_scale=1 / 255 if affinities.dtype == np.uint8 else 1.0,
        settings=settings,
    )
