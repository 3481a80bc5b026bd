"""Opening training volumes: metadata is read, bad input is named."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import prepare_ds

from voltrain.data import DatasetConfig, open_volume, raw_roi_for_training
from voltrain.errors import DataError


def _config(container, **overrides) -> DatasetConfig:
    paths = {
        "raw": str(container / "raw"),
        "gt": str(container / "labels"),
        "mask": str(container / "mask"),
    }
    paths.update(overrides)
    return DatasetConfig(**paths)


def test_voxel_size_and_offset_come_from_metadata(volume, sparse_volume):
    v3 = open_volume(_config(volume), "data.train[0]", Coordinate(20, 20, 20))
    assert v3.voxel_size == Coordinate(8, 8, 8)
    assert v3.gt.roi == Roi((16, 32, 48), (512, 512, 512))
    v2 = open_volume(_config(sparse_volume), "data.train[1]", Coordinate(20, 20, 20))
    assert zarr.open(str(sparse_volume / "raw")).metadata.zarr_format == 2
    assert v2.voxel_size == Coordinate(8, 8, 8)


def test_missing_path_names_key_and_path(volume, tmp_path):
    missing = str(tmp_path / "nowhere.zarr" / "raw")
    with pytest.raises(DataError, match=r"data.train\[0\].raw: .*nowhere.zarr"):
        open_volume(_config(volume, raw=missing), "data.train[0]", Coordinate(20, 20, 20))
    with pytest.raises(DataError, match=r"data.train\[0\].gt: .*no zarr array.*nolabels"):
        open_volume(
            _config(volume, gt=str(volume / "nolabels")), "data.train[0]", Coordinate(8, 8, 8)
        )


def test_array_without_voxel_size_is_rejected(volume, tmp_path):
    path = tmp_path / "bare.zarr"
    zarr.create_array(str(path), name="labels", data=np.ones((32, 32, 32), np.uint64))
    with pytest.raises(DataError, match=r"data.train\[0\].gt: .*bare.zarr/labels.*voxel_size"):
        open_volume(
            _config(volume, gt=str(path / "labels"), mask=None),
            "data.train[0]",
            Coordinate(8, 8, 8),
        )


@pytest.mark.parametrize("gt_voxel_size", [(12, 12, 12), (4, 4, 4), (8, 12, 16)])
def test_gt_voxel_size_must_be_an_integer_multiple_of_raws(volume, tmp_path, gt_voxel_size):
    path = tmp_path / "coarse.zarr"
    zarr.open_group(str(path), mode="w")
    gt = prepare_ds(str(path / "labels"), (16, 16, 16), voxel_size=gt_voxel_size, dtype=np.uint64)
    gt[gt.roi] = np.ones((16, 16, 16), np.uint64)
    match = rf"gt voxel_size \({gt_voxel_size[0]}, .*coarse.zarr/labels.*raw voxel_size \(8, 8, 8\)"
    with pytest.raises(DataError, match=match):
        open_volume(
            _config(volume, gt=str(path / "labels"), mask=None),
            "data.train[0]",
            Coordinate(4, 4, 4),
        )


def test_gt_at_twice_raws_voxel_size_is_accepted(volume, tmp_path):
    path = tmp_path / "coarse.zarr"
    gt = prepare_ds(
        str(path / "labels"),
        (32, 32, 32),
        offset=(16, 32, 48),
        voxel_size=(16, 16, 16),
        dtype=np.uint64,
    )
    gt[gt.roi] = np.ones((32, 32, 32), np.uint64)
    opened = open_volume(
        _config(volume, gt=str(path / "labels"), mask=None), "data.train[0]", Coordinate(8, 8, 8)
    )
    assert opened.voxel_size == Coordinate(16, 16, 16)
    assert opened.raw_voxel_size == Coordinate(8, 8, 8)


def test_volume_smaller_than_one_sample(volume):
    with pytest.raises(DataError, match=r"64, 64, 64\) voxels is smaller than .*\(80, 80, 80\)"):
        open_volume(_config(volume), "data.train[0]", Coordinate(80, 80, 80))


def test_clip_raw_crops_to_gt_plus_context(volume):
    opened = open_volume(_config(volume, mask=None), "data.train[0]", Coordinate(8, 8, 8))
    context = Coordinate(80, 80, 80)
    assert raw_roi_for_training(opened, context, clip_raw=False) == opened.raw.roi
    # raw and gt cover the same ROI here, so clipping leaves it as it is
    assert raw_roi_for_training(opened, context, clip_raw=True) == opened.raw.roi
