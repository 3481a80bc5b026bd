"""The OME-NGFF writer: what OME readers and funlib.persistence find in what it writes."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds, open_ome_ds
from iohub.ngff import open_ome_zarr

from voltrain.errors import ConfigError
from voltrain.io.write import Placement, level_path, write_image

PLACEMENT = Placement.of((40, 4, 4), (80, 12, 8), ["micrometer"] * 3)


def test_labels_open_with_the_ome_reader_at_their_world_position(tmp_path):
    labels = np.arange(5 * 6 * 7, dtype=np.int64).reshape(5, 6, 7)
    write_image(zarr.open_group(tmp_path / "out.zarr", mode="w"), "seg", labels, PLACEMENT, True)

    array = open_ome_ds(tmp_path / "out.zarr" / "seg", "s0")
    assert array.voxel_size == Coordinate(40, 4, 4)
    assert array.roi == Roi((80, 12, 8), (200, 24, 28))
    assert array.units == ["micrometer"] * 3
    assert array.dtype == np.uint64  # int64 is no neuroglancer type
    np.testing.assert_array_equal(array[array.roi], labels)
    # funlib's plain reader finds the same placement in the array's own attributes.
    plain = open_ds(level_path(tmp_path / "out.zarr" / "seg"))
    assert plain.roi == array.roi and plain.voxel_size == array.voxel_size
    stored = zarr.open_array(level_path(tmp_path / "out.zarr" / "seg"))
    assert stored.metadata.dimension_names == ("z", "y", "x")
    assert stored.attrs["dimension_units"] == ["40 micrometer", "4 micrometer", "4 micrometer"]


def test_a_channel_image_keeps_its_channel_axis_out_of_the_world_placement(tmp_path):
    data = np.random.default_rng(0).random((3, 4, 5, 6), dtype=np.float32)
    write_image(zarr.open_group(tmp_path / "out.zarr", mode="w"), "a/affs", data, PLACEMENT)

    # funlib 0.7's open_ome_ds fails on channel axes with the installed iohub (it asks a
    # channel axis for its unit), so read the OME metadata with iohub itself.
    with open_ome_zarr(tmp_path / "out.zarr" / "a" / "affs", mode="r") as image:
        assert [axis.name for axis in image.axes] == ["c", "z", "y", "x"]
        assert [axis.type for axis in image.axes] == ["channel", "space", "space", "space"]
        assert image.get_effective_scale("s0") == [1, 40, 4, 4]
        assert image.get_effective_translation("s0") == [0, 80, 12, 8]
    plain = open_ds(level_path(tmp_path / "out.zarr" / "a" / "affs"))
    assert plain.voxel_size == Coordinate(40, 4, 4) and plain.roi.offset == Coordinate(80, 12, 8)
    assert plain.units == ["micrometer"] * 3
    np.testing.assert_array_equal(plain[plain.roi], data)
    stored = zarr.open_array(level_path(tmp_path / "out.zarr" / "a" / "affs"))
    assert stored.metadata.dimension_names == ("c", "z", "y", "x")


def test_units_default_to_nanometers_and_abbreviations_become_ome_names():
    assert Placement.of((8, 8, 8), (0, 0, 0)).units == ("nanometer",) * 3
    assert Placement.of((8, 8, 8), (0, 0, 0), ["", "", ""]).units == ("nanometer",) * 3
    assert Placement.of((8, 8, 8), (0, 0, 0), ["nm", "µm", "um"]).units == (
        "nanometer",
        "micrometer",
        "micrometer",
    )
    with pytest.raises(ConfigError, match="'pixel' is not a length unit"):
        Placement.of((8, 8, 8), (0, 0, 0), ["pixel"] * 3)


def test_uint64_ids_that_went_through_int64_come_back_unchanged(tmp_path):
    ids = np.array([0, 1, 2**63 + 5, 2**64 - 1], dtype=np.uint64).reshape(1, 2, 2)
    group = zarr.open_group(tmp_path / "out.zarr", mode="w")
    write_image(group, "gt", ids.astype(np.int64), PLACEMENT, labels=True)
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "out.zarr" / "gt" / "s0")[:], ids)
    with pytest.raises(ConfigError, match="gt: label ids must be integers"):
        write_image(group, "gt", np.full((2, 2, 2), 0.5), PLACEMENT, labels=True)
