"""Every supported format, written with its own library, opens at the right place in world
units and reads the right voxels through the loader's chunk path."""

from __future__ import annotations

from pathlib import Path

import gunpowder as gp
import h5py
import numpy as np
import pytest
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array
from io_writers import downsample, write_n5, write_ome_image
from iohub.ngff import open_ome_zarr
from iohub.ngff.models import ChannelAxisMeta, SpaceAxisMeta, TransformationMeta

from voltrain.data import DatasetConfig, open_volume
from voltrain.errors import DataError
from voltrain.io.read import ArraySource, open_source
from voltrain.kernels.chunk_cache import ChunkCache
from voltrain.nodes.zarr_source import ZarrSource

RNG = np.random.default_rng(0)
DATA = RNG.integers(0, 255, size=(24, 20, 16), dtype=np.uint8)
KEY = gp.ArrayKey("READ")


def read_through_source(array: Array, roi: Roi) -> np.ndarray:
    """Read ``roi`` as a loader worker does: ZarrSource with a chunk cache."""
    source = ZarrSource(KEY, array, chunk_cache=ChunkCache(2**24))
    with gp.build(source):
        request = gp.BatchRequest()
        request[KEY] = gp.ArraySpec(roi=roi)
        return source.request_batch(request)[KEY].data


def check_reads(array: Array, expected: np.ndarray) -> None:
    """The whole volume and an off-chunk box read back as ``expected``."""
    np.testing.assert_array_equal(read_through_source(array, array.roi), expected)
    vs = array.voxel_size
    shape = Coordinate(expected.shape) - Coordinate(5, 4, 3)
    box = Roi(array.roi.offset + vs * Coordinate(3, 1, 2), vs * shape)
    inside = tuple(slice(b, b + s) for b, s in zip((3, 1, 2), shape, strict=True))
    np.testing.assert_array_equal(read_through_source(array, box), expected[inside])


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_level_is_picked_by_name_voxel_size_or_array_path(tmp_path, version):
    path = str(tmp_path / "image.ome.zarr")
    write_ome_image(path, [DATA, downsample(DATA)], (8, 4, 4), (32, 16, 16), version)
    by_name = open_source(ArraySource(path=path, scale="s1"), "raw")
    by_size = open_source(ArraySource(path=path, voxel_size=[16, 8, 8]), "raw")
    by_path = open_source(f"{path}/s1", "raw")
    for array in (by_name, by_size, by_path):
        assert array.voxel_size == Coordinate(16, 8, 8)
        assert array.roi.offset == Coordinate(32, 16, 16)
        assert array.units == ["nanometer"] * 3
        assert array.axis_names == ["z", "y", "x"]
        check_reads(array, downsample(DATA))
    finest = open_source(path, "raw")
    assert finest.voxel_size == Coordinate(8, 4, 4)
    check_reads(finest, DATA)


def test_ome_multiscale_transform_applies_after_the_levels(tmp_path):
    path = str(tmp_path / "image.zarr")
    write_ome_image(path, [DATA], (8, 4, 4), (32, 16, 16), global_scale=[2.0, 1.0, 1.0])
    array = open_source(path, "raw")
    assert array.voxel_size == Coordinate(16, 4, 4)
    assert array.roi.offset == Coordinate(64, 16, 16)


def test_ome_micrometers_become_whole_nanometers(tmp_path):
    path = str(tmp_path / "image.zarr")
    write_ome_image(path, [DATA], (0.008, 0.004, 0.004), (0.032, 0, 0), unit="micrometer")
    array = open_source(path, "raw")
    assert array.voxel_size == Coordinate(8, 4, 4)
    assert array.roi.offset == Coordinate(32, 0, 0)
    assert array.units == ["nanometer"] * 3
    picked = open_source(ArraySource(path=path, voxel_size=[0.008, 0.004, 0.004]), "raw")
    assert picked.voxel_size == Coordinate(8, 4, 4)


def test_image_written_by_iohub_with_a_channel_axis(tmp_path):
    """iohub (what funlib.persistence's OME writer uses) writes c, z, y, x images."""
    axes = [ChannelAxisMeta(name="c", type="channel")] + [
        SpaceAxisMeta(name=name, type="space", unit="nanometer") for name in "zyx"
    ]
    transforms = [
        TransformationMeta(type="scale", scale=[1.0, 10.0, 4.0, 4.0]),
        TransformationMeta(type="translation", translation=[0.0, 40.0, 20.0, 12.0]),
    ]
    store = tmp_path / "iohub.ome.zarr"
    # iohub switches zarr's codec pipeline for the whole process: restore it afterwards
    with zarr.config.set({"codec_pipeline.path": zarr.config.get("codec_pipeline.path")}):
        with open_ome_zarr(store, mode="w", layout="fov", axes=axes, channel_names=["em"]) as ome:
            ome.create_image("0", DATA[np.newaxis], transform=transforms)
    array = open_source(str(store), "raw")
    assert array.voxel_size == Coordinate(10, 4, 4)
    assert array.roi.offset == Coordinate(40, 20, 12)
    assert array.units == ["nanometer"] * 3
    assert array.axis_names == ["c", "z", "y", "x"]
    assert array.channel_dims == 1
    np.testing.assert_array_equal(array[array.roi], DATA[np.newaxis])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_plain_zarr_with_gunpowder_resolution(tmp_path, zarr_format):
    path = tmp_path / "gp.zarr"
    array = zarr.create_array(
        str(path), name="raw", data=DATA, chunks=(8, 8, 8), zarr_format=zarr_format
    )
    array.attrs.update(resolution=[40, 4, 4], offset=[80, 8, 0])
    opened = open_source(str(path / "raw"), "raw")
    assert opened.voxel_size == Coordinate(40, 4, 4)
    assert opened.roi.offset == Coordinate(80, 8, 0)
    check_reads(opened, DATA)


def test_n5_in_xyz_order_as_gunpowder_writes_it(tmp_path):
    path = tmp_path / "data.n5" / "volumes" / "raw"
    write_n5(path, DATA, {"resolution": [4, 4, 40], "offset": [0, 8, 80]}, block=8)
    opened = open_source(str(tmp_path / "data.n5/volumes/raw"), "raw")
    assert opened.voxel_size == Coordinate(40, 4, 4)
    assert opened.roi.offset == Coordinate(80, 8, 0)
    check_reads(opened, DATA)


def test_hdf5_in_cremi_layout(tmp_path):
    path = tmp_path / "sample_A.hdf"
    labels = RNG.integers(0, 2**40, size=DATA.shape, dtype=np.uint64)
    with h5py.File(path, "w") as file:
        file.create_dataset("volumes/raw", data=DATA)  # contiguous, as CREMI's raw is
        file["volumes/raw"].attrs.update(resolution=[40.0, 4.0, 4.0], units=[b"nm"] * 3)
        file.create_dataset("volumes/labels/neuron_ids", data=labels, chunks=(8, 8, 8))
        file["volumes/labels/neuron_ids"].attrs.update(resolution=[40, 4, 4], offset=[40, 0, 0])
    raw = open_source(f"{path}/volumes/raw", "raw")
    gt = open_source(f"{path}/volumes/labels/neuron_ids", "gt")
    assert (raw.voxel_size, raw.roi.offset) == (Coordinate(40, 4, 4), Coordinate(0, 0, 0))
    assert (gt.voxel_size, gt.roi.offset) == (Coordinate(40, 4, 4), Coordinate(40, 0, 0))
    assert raw.units == ["nm"] * 3
    check_reads(raw, DATA)
    check_reads(gt, labels)


def test_background_label_and_mask_dtypes(tmp_path):
    """gt of any integer dtype reads with its background as 0; masks read as 0/1."""
    path = tmp_path / "labels.hdf"
    labels = np.full((16, 16, 16), -1, dtype=np.int32)
    labels[4:12, 4:12, 4:12] = 0  # a real object whose id happens to be 0
    labels[8:, 8:, 8:] = 7
    mask = np.zeros((16, 16, 16), dtype=bool)
    mask[2:14] = True
    with h5py.File(path, "w") as file:
        for name, data in (("raw", DATA[:16, :16, :16]), ("gt", labels), ("mask", mask)):
            file.create_dataset(name, data=data)
            file[name].attrs["resolution"] = [8, 8, 8]
    config = DatasetConfig(raw=f"{path}/raw", gt=f"{path}/gt", mask=f"{path}/mask", background=-1)
    volume = open_volume(config, "data.train[0]", Coordinate(4, 4, 4))
    gt = read_through_source(volume.gt, volume.gt.roi)
    assert np.all(gt[labels == -1] == 0)
    assert len(np.unique(gt[labels == 0])) == 1 and gt[6, 6, 6] != 0 and gt[6, 6, 6] != 7
    assert np.all(gt[labels == 7] == 7)
    read_mask = read_through_source(volume.mask, volume.mask.roi)
    assert read_mask.dtype == np.uint8
    np.testing.assert_array_equal(read_mask, mask.astype(np.uint8))


def test_background_must_be_a_label_id_of_the_dtype(tmp_path):
    path = tmp_path / "labels.zarr"
    gt = zarr.create_array(str(path), name="gt", data=np.zeros((8, 8, 8), np.uint8))
    gt.attrs["voxel_size"] = [8, 8, 8]
    config = DatasetConfig(raw=f"{path}/gt", gt=f"{path}/gt", background=-1)
    with pytest.raises(DataError, match=r"data.train\[0\].background: -1 is not a uint8"):
        open_volume(config, "data.train[0]", Coordinate(4, 4, 4))


@pytest.mark.parametrize(
    "source, message",
    [
        (
            lambda p: ArraySource(path=p, scale="s7"),
            r"raw: no OME-NGFF level 's7' in '.*image.zarr'; it has s0, s1",
        ),
        (
            lambda p: ArraySource(path=p, voxel_size=[5, 5, 5]),
            r"raw: no OME-NGFF level of '.*image.zarr' has voxel_size \[5, 5, 5\]",
        ),
        (lambda p: p + "/nope", r"raw: no zarr array or group at '.*image.zarr/nope'"),
        (
            lambda p: str(Path(p).parent / "missing.zarr/raw"),
            r"raw: no such container '.*missing.zarr'",
        ),
        (
            lambda p: str(Path(p).parent / "missing.h5/raw"),
            r"raw: no such HDF5 file '.*missing.h5'",
        ),
    ],
)
def test_bad_sources_name_the_key_and_path(tmp_path, source, message):
    path = str(tmp_path / "image.zarr")
    write_ome_image(path, [DATA, downsample(DATA)], (8, 4, 4), (0, 0, 0))
    with pytest.raises(DataError, match=message):
        open_source(source(path), "raw")


def test_zarr_v3_dimension_names_name_the_axes(tmp_path):
    path = tmp_path / "named.zarr"
    array = zarr.create_array(
        str(path), name="raw", data=DATA, chunks=(8, 8, 8), dimension_names=["z", "y", "x"]
    )
    array.attrs.update(voxel_size=[40, 4, 4], units=["nm", "nm", "nm"])
    opened = open_source(str(path / "raw"), "raw")
    assert opened.axis_names == ["z", "y", "x"]
    assert opened.units == ["nm", "nm", "nm"]


def test_level_offset_off_the_voxel_grid_moves_to_the_nearest_grid_point(tmp_path, caplog):
    """Pyramids that shift coarse levels by half a voxel still open on a whole grid."""
    path = str(tmp_path / "shifted.zarr")
    write_ome_image(path, [DATA], (8, 8, 8), (36, 4, 0))
    with caplog.at_level("WARNING"):
        array = open_source(path, "raw")
    assert array.roi.offset == Coordinate(40, 8, 0)
    assert "not on its voxel grid" in caplog.text and "shifted.zarr" in caplog.text


def test_voxel_size_of_a_single_array_is_checked(tmp_path):
    path = tmp_path / "plain.zarr"
    zarr.create_array(str(path), name="raw", data=DATA).attrs["voxel_size"] = [40, 4, 4]
    source = ArraySource(path=str(path / "raw"), voxel_size=[8, 8, 8])
    with pytest.raises(DataError, match=r"raw: .*plain.zarr/raw' has voxel_size \[40, 4, 4\]"):
        open_source(source, "raw")
    assert open_source(source.model_copy(update={"voxel_size": [40, 4, 4]}), "raw")


def test_time_axis_is_a_one_line_error(tmp_path):
    path = tmp_path / "movie.zarr"
    write_ome_image(path, [DATA], (8, 4, 4), (0, 0, 0))
    group = zarr.open_group(str(path), mode="r+")
    ome = dict(group.attrs["ome"])
    multiscale = ome["multiscales"][0]
    multiscale["axes"][0] = {"name": "t", "type": "time", "unit": "second"}
    group.attrs["ome"] = ome
    with pytest.raises(DataError, match=r"raw: '.*movie.zarr' has a time axis"):
        open_source(str(path), "raw")
