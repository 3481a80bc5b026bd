"""Snapshots: OME-NGFF images placed like their source, written whole or not at all."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds, open_ome_ds

from tests.helpers import experiment_dict
from voltrain.experiment import parse_config
from voltrain.run import TrainingRun
from voltrain.run.snapshot import SnapshotArray, write_snapshot


@pytest.fixture
def micrometer_volume(volume, tmp_path):
    """The session volume, its arrays labelled in micrometers (as funlib writes units)."""
    container = tmp_path / "um.zarr"
    shutil.copytree(volume, container)
    for name in ("raw", "labels", "mask"):
        zarr.open_array(container / name, mode="r+").attrs["units"] = ["um"] * 3
    return container


def test_a_snapshot_reopened_by_an_ome_reader_shows_the_sources_placement(
    micrometer_volume, tmp_path
):
    raw = experiment_dict(micrometer_volume, snapshot_interval=1, batch_size=1)
    run = TrainingRun(parse_config(raw), tmp_path / "run", "cpu")
    run.prepare(resume=False)
    with run.trainer:
        list(run.trainer.iterate(1, run.model, run.optimizer, "cpu"))

    group = tmp_path / "run" / "snapshots.zarr" / "1"
    source = open_ds(str(micrometer_volume / "labels"))
    for name in ("raw", "gt", "mask"):
        image = open_ome_ds(group / name, "s0")
        assert image.voxel_size == source.voxel_size == Coordinate(8, 8, 8)
        assert image.units == ["micrometer"] * 3
        # On the source's voxel grid, inside it (the volume's offset is 16, 32, 48).
        assert image.roi.offset % source.voxel_size == Coordinate(0, 0, 0)
        assert source.roi.contains(image.roi) or name == "raw"
    gt = open_ome_ds(group / "gt", "s0")
    assert gt.dtype == np.uint64
    np.testing.assert_array_equal(gt[gt.roi], source[Roi(gt.roi.offset, gt.roi.shape)])
    raw_image = open_ome_ds(group / "raw", "s0")
    assert gt.roi.offset == raw_image.roi.offset + Coordinate(64, 64, 64)


class _FailingData:
    """Array-like whose values cannot be read: a write that fails midway."""

    shape = (4, 4, 4)

    def __array__(self, dtype=None, copy=None):
        raise OSError("disk gone")


def _arrays(fail: bool) -> dict[str, SnapshotArray]:
    good = SnapshotArray(np.ones((4, 4, 4), np.float32), (0, 0, 0), (8, 8, 8))
    second = SnapshotArray(_FailingData() if fail else np.zeros((4, 4, 4)), (0, 0, 0), (8, 8, 8))
    return {"raw": good, "prediction": second}


def test_a_snapshot_that_fails_midway_leaves_no_partial_group(tmp_path):
    container = tmp_path / "snapshots.zarr"
    write_snapshot(container, 10, _arrays(fail=False))
    with pytest.raises(OSError, match="disk gone"):
        write_snapshot(container, 20, _arrays(fail=True))
    with pytest.raises(OSError, match="disk gone"):
        write_snapshot(container, 10, _arrays(fail=True))  # a rewrite of a whole snapshot
    assert sorted(p.name for p in container.iterdir() if p.is_dir()) == ["10"]
    # The earlier snapshot of iteration 10 is still whole.
    assert set(zarr.open_group(container / "10").group_keys()) == {"raw", "prediction"}
    np.testing.assert_array_equal(open_ds(str(container / "10" / "raw" / "s0"))[:], 1)


def test_a_temporary_group_left_by_a_killed_writer_is_removed_by_the_next(tmp_path):
    container = tmp_path / "snapshots.zarr"
    write_snapshot(container, 10, _arrays(fail=False))
    (container / ".tmp-20-deadbeef" / "raw").mkdir(parents=True)  # as a SIGKILL leaves it
    write_snapshot(container, 30, _arrays(fail=False))
    assert sorted(p.name for p in container.iterdir() if p.is_dir()) == ["10", "30"]
    assert set(zarr.open_group(container).group_keys()) == {"10", "30"}
