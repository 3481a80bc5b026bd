from pathlib import Path

import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds

from voltrain.errors import ConfigError
from voltrain.synthetic import cell_borders, make_synthetic_volume

SHAPE = (48, 40, 44)
VOXEL_SIZE = (8, 4, 4)
OFFSET = (400, 800, 1200)
NUM_CELLS = 20


def read_all(container: Path, name: str) -> np.ndarray:
    dataset = open_ds(str(container / name))
    return dataset[dataset.roi]


@pytest.fixture(scope="module", params=[2, 3], ids=["zarr2", "zarr3"])
def volume(request, tmp_path_factory):
    container = tmp_path_factory.mktemp(f"v{request.param}") / "data.zarr"
    return make_synthetic_volume(
        container,
        shape=SHAPE,
        voxel_size=VOXEL_SIZE,
        offset=OFFSET,
        num_cells=NUM_CELLS,
        mask_fraction=0.4,
        chunk_shape=(16, 16, 16),
        seed=3,
        zarr_format=request.param,
    ), request.param


def test_datasets_open_with_their_geometry_and_dtype(volume):
    volume, zarr_format = volume
    metadata_file = ".zarray" if zarr_format == 2 else "zarr.json"
    expected_roi = Roi(OFFSET, Coordinate(SHAPE) * Coordinate(VOXEL_SIZE))
    assert volume.roi == expected_roi
    for name, dtype in (
        (volume.raw, np.uint8),
        (volume.labels, np.uint64),
        (volume.mask, np.uint8),
    ):
        assert (volume.container / name / metadata_file).exists()
        dataset = open_ds(str(volume.container / name))
        assert dataset.voxel_size == Coordinate(VOXEL_SIZE)
        assert dataset.offset == Coordinate(OFFSET)
        assert dataset.roi == expected_roi
        assert dataset.shape == SHAPE
        assert dataset.dtype == dtype
        assert dataset.data.chunksize == (16, 16, 16)


def test_labels_are_num_cells_ids_without_background(volume):
    volume, _ = volume
    labels = read_all(volume.container, volume.labels)
    np.testing.assert_array_equal(np.unique(labels), np.arange(1, NUM_CELLS + 1))


def test_membranes_are_much_darker_than_cell_interiors(volume):
    volume, _ = volume
    raw = read_all(volume.container, volume.raw).astype(np.float64)
    membrane = cell_borders(read_all(volume.container, volume.labels))
    assert 0.02 < membrane.mean() < 0.5
    assert raw[~membrane].mean() == pytest.approx(180, abs=15)
    assert raw[~membrane].mean() - raw[membrane].mean() > 40


def test_mask_is_binary_and_reports_its_coverage(volume):
    volume, _ = volume
    mask = read_all(volume.container, volume.mask)
    assert set(np.unique(mask)) == {0, 1}
    assert mask.mean() == pytest.approx(volume.mask_coverage)


@pytest.mark.parametrize("mask_fraction", [0.1, 0.4, 0.9])
def test_mask_covers_the_requested_fraction(tmp_path, mask_fraction):
    volume = make_synthetic_volume(
        tmp_path / "data.zarr", shape=(48, 48, 48), num_cells=10, mask_fraction=mask_fraction
    )
    mask = read_all(volume.container, volume.mask)
    assert abs(mask.mean() - mask_fraction) <= 0.03
    # Blobs, not salt and pepper: neighbouring voxels almost always agree.
    assert (mask[1:] == mask[:-1]).mean() > 0.9


def test_same_seed_gives_identical_volumes_and_another_seed_does_not(tmp_path):
    def generate(name: str, seed: int) -> list[np.ndarray]:
        volume = make_synthetic_volume(
            tmp_path / name, shape=(32, 32, 32), num_cells=8, chunk_shape=(16, 16, 16), seed=seed
        )
        return [read_all(volume.container, n) for n in (volume.raw, volume.labels, volume.mask)]

    first, again, other = generate("a.zarr", 7), generate("b.zarr", 7), generate("c.zarr", 8)
    for a, b, c in zip(first, again, other, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_regenerating_replaces_the_container(tmp_path):
    container = tmp_path / "data.zarr"
    make_synthetic_volume(container, shape=(32, 32, 32), num_cells=8, zarr_format=2)
    volume = make_synthetic_volume(container, shape=(24, 24, 24), num_cells=8, zarr_format=3)
    assert open_ds(str(container / volume.raw)).shape == (24, 24, 24)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"offset": (4, 0, 0)},
        {"mask_fraction": 1.5},
        {"num_cells": 0},
        {"voxel_size": (8, 8)},
        {"zarr_format": 4},
    ],
)
def test_bad_arguments_raise_config_error(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        make_synthetic_volume(tmp_path / "data.zarr", shape=(16, 16, 16), **kwargs)
