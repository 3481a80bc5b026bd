"""The ``data`` config section and the opening and checking of training volumes.

Every array is read through ``voltrain.io.read.open_source`` (OME-NGFF, zarr, N5, HDF5,
local or remote) so that voxel size and offset come from the array's own metadata, in world
units. Every check that a user's data can fail raises a ``DataError`` whose message names
the config key and the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array
from pydantic import Field, field_validator

from voltrain.config import StrictModel
from voltrain.errors import ConfigError, DataError
from voltrain.io.read import (
    ArraySource,
    as_labels,
    as_mask,
    open_source,
    resolve_source,
    source_path,
)

if TYPE_CHECKING:
    from voltrain.models.base import ModelConfig


class DatasetConfig(StrictModel):
    """One training or validation volume: raw, ground truth and an optional mask.

    Each volume is a path (``container.zarr/dataset``, ``sample.hdf/volumes/raw``, an
    ``s3://`` URL) or a mapping that also picks an OME-NGFF level
    (``{path: image.zarr, scale: s1}``); see ``voltrain.io.read``. Relative paths are
    resolved against the directory of the config file.
    """

    name: str | None = None
    raw: str | ArraySource
    gt: str | ArraySource
    mask: str | ArraySource | None = None
    weight: float = Field(1.0, gt=0, description="relative sampling weight")
    background: int = Field(0, description="the gt label id of background (read as 0)")

    @field_validator("raw", "gt", "mask")
    @classmethod
    def _not_empty(cls, value: str | ArraySource | None) -> str | ArraySource | None:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must be a non-empty array path")
        return value


class UnlabeledDatasetConfig(StrictModel):
    """One volume of raw without labels (``data.unlabeled``), for semi-supervised training:
    raw and an optional mask of where raw is valid (any format ``raw`` may have)."""

    name: str | None = None
    raw: str | ArraySource
    mask: str | ArraySource | None = None
    weight: float = Field(1.0, gt=0, description="relative sampling weight")

    _not_empty = field_validator("raw", "mask")(DatasetConfig._not_empty.__func__)


class DataConfig(StrictModel):
    """The ``data`` section: volumes to train on and, optionally, to validate on, and raw
    without labels for semi-supervised training (``unlabeled``)."""

    train: list[DatasetConfig] = Field(min_length=1)
    validate_: list[DatasetConfig] = Field(default_factory=list, alias="validate")
    unlabeled: list[UnlabeledDatasetConfig] = Field(default_factory=list)

    model_config = StrictModel.model_config | {"populate_by_name": True}

    def resolved(self, base_dir: Path) -> DataConfig:
        """Return a copy with every relative path made absolute against ``base_dir``."""

        def fix(ds: DatasetConfig | UnlabeledDatasetConfig) -> DatasetConfig:
            update = {}
            for key in ("raw", "gt", "mask"):
                value = getattr(ds, key, None)
                if value is not None:
                    update[key] = resolve_source(value, base_dir)
            return ds.model_copy(update=update)

        return DataConfig(
            train=[fix(d) for d in self.train],
            validate=[fix(d) for d in self.validate_],
            unlabeled=[fix(d) for d in self.unlabeled],
        )


@dataclass
class TrainingVolume:
    """The opened arrays of one dataset, checked for consistency.

    ``mask`` is None when the config gives no mask: every gt voxel is then trusted.
    """

    name: str
    raw: Array
    gt: Array
    mask: Array | None
    weight: float

    @property
    def voxel_size(self) -> Coordinate:
        """The voxel size of gt and mask, and of the network's output and targets."""
        return self.gt.voxel_size

    @property
    def raw_voxel_size(self) -> Coordinate:
        """The voxel size of raw, the network's input (gt's or an integer fraction of it)."""
        return self.raw.voxel_size

    @property
    def raw_channels(self) -> int:
        """Channels of raw: 1 for a (z, y, x) array, c for (c, z, y, x)."""
        return raw_channels(self.raw)


def open_array(path: str | ArraySource, where: str, channels: bool = False) -> Array:
    """Open a volume with its voxel size and offset, or raise a ``DataError``.

    ``where`` is the config key the path came from (e.g. ``data.train[0].raw``). With
    ``channels``, a leading channel axis is allowed: (c, z, y, x) with a 3D voxel size.
    """
    array = open_source(path, where)
    allowed_ndims = (3, 4) if channels else (3,)
    if array.voxel_size.dims != 3 or len(array.shape) not in allowed_ndims:
        kind = "3D array (or (c, z, y, x) with channels)" if channels else "3D array"
        raise DataError(
            f"{where}: '{source_path(path)}' must be a {kind} with a 3D voxel_size, "
            f"got shape {array.shape} and voxel_size {tuple(array.voxel_size)}"
        )
    return array


def open_volume(config: DatasetConfig, where: str, output_shape: Coordinate) -> TrainingVolume:
    """Open and check one dataset of the ``data`` section.

    Args:
        config: the dataset's config entry.
        where: its config key, e.g. ``data.train[1]``, used in error messages.
        output_shape: the network's output shape in voxels; gt must hold at least one.
    """
    raw = open_array(config.raw, f"{where}.raw", channels=True)
    gt = open_array(config.gt, f"{where}.gt")
    mask = as_mask(open_array(config.mask, f"{where}.mask")) if config.mask else None
    name = config.name or Path(source_path(config.gt)).parent.name or where

    if any(g % r for g, r in zip(gt.voxel_size, raw.voxel_size, strict=True)):
        raise DataError(
            f"{where}: gt voxel_size {tuple(gt.voxel_size)} ('{config.gt}') is not an integer "
            f"multiple of raw voxel_size {tuple(raw.voxel_size)} ('{config.raw}') on every axis"
        )
    if mask is not None and mask.voxel_size != gt.voxel_size:
        raise DataError(
            f"{where}: mask voxel_size {tuple(mask.voxel_size)} ('{config.mask}') does not "
            f"fit gt voxel_size {tuple(gt.voxel_size)} ('{config.gt}'); they must be equal"
        )
    if not np.issubdtype(gt.dtype, np.integer) and gt.dtype != bool:
        raise DataError(f"{where}.gt: '{config.gt}' must hold integer label ids, got {gt.dtype}")
    gt = as_labels(gt, config.background, where)
    if not raw.roi.intersects(gt.roi):
        raise DataError(f"{where}: raw ROI {raw.roi} and gt ROI {gt.roi} do not overlap")
    gt_shape = gt.roi.shape / gt.voxel_size
    if any(s < o for s, o in zip(gt_shape, output_shape, strict=True)):
        raise DataError(
            f"{where}.gt: volume '{config.gt}' of {tuple(gt_shape)} voxels is smaller than "
            f"one sample's output of {tuple(output_shape)} voxels"
        )
    return TrainingVolume(name=name, raw=raw, gt=gt, mask=mask, weight=config.weight)


def raw_channels(raw: Array) -> int:
    """Channels of a raw array: 1 for (z, y, x), c for (c, z, y, x)."""
    return int(np.prod(raw.shape[: raw.channel_dims], dtype=np.int64))


def check_output_voxel_size(
    volume: TrainingVolume, config: DatasetConfig, where: str, model: ModelConfig
) -> None:
    """Raise ``ConfigError`` unless the network's output voxel size is gt's.

    Raw's voxel size times the model's ``output_factor`` (the U-Net's
    ``model.output_downsample``) must be gt's, so that targets built from gt line up with
    the network's output voxels.
    """
    output_voxel_size = model.output_voxel_size(volume.raw_voxel_size)
    if output_voxel_size != volume.voxel_size:
        factor = list(volume.voxel_size / volume.raw_voxel_size)
        key = model.output_factor_key
        fix = f"set {key}: {factor}" if key != "model" else f"its output factor must be {factor}"
        raise ConfigError(
            f"{key}: the network's output voxel size "
            f"{tuple(output_voxel_size)} (raw {tuple(volume.raw_voxel_size)} x "
            f"{list(model.output_factor)}) does not match gt voxel_size "
            f"{tuple(volume.voxel_size)} of {where}.gt '{config.gt}'; {fix}"
        )


def raw_roi_for_training(volume: TrainingVolume, context: Coordinate, clip_raw: bool) -> Roi:
    """The ROI of raw that training may read; outside it, raw is padded with zeros.

    With ``clip_raw`` the raw is cropped to the gt ROI plus the network's context, so that
    a large raw volume around a small labelled region is not read needlessly.
    """
    if not clip_raw:
        return volume.raw.roi
    wanted = volume.gt.roi.grow(context, context)
    return volume.raw.roi.intersect(wanted).snap_to_grid(volume.raw_voxel_size, mode="shrink")
