import numpy as np
import pytest
import zarr
from funlib.geometry import Coordinate
from funlib.persistence import open_ds
from scipy import ndimage

from voltrain.errors import ConfigError
from voltrain.synthetic import cell_borders
from voltrain.synthetic_em import (
    HELDOUT_SEED_OFFSET,
    ORGANELLE_MARGIN_NM,
    VOXEL_SIZES,
    make_em_pair,
    make_em_volume,
    surface_distance,
)

ISOTROPIC_SHAPE = (48, 48, 48)
ANISOTROPIC_SHAPE = (12, 96, 96)


def read(volume, name: str) -> np.ndarray:
    dataset = open_ds(str(volume.container / name))
    return dataset[dataset.roi]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    directory = tmp_path_factory.mktemp("em")
    return make_em_pair(directory, "isotropic", shape=ISOTROPIC_SHAPE, seed=5)


@pytest.fixture(scope="module")
def anisotropic(tmp_path_factory):
    container = tmp_path_factory.mktemp("aniso") / "data.zarr"
    return make_em_volume(
        container,
        shape=ANISOTROPIC_SHAPE,
        voxel_size=VOXEL_SIZES["anisotropic"],
        offset=(400, 40, 40),
        seed=1,
    )


def test_anisotropic_voxel_size_and_offset_are_recorded(anisotropic):
    for name in ("raw", "labels", "mask", "organelles"):
        dataset = open_ds(str(anisotropic.container / name))
        assert dataset.voxel_size == Coordinate(40, 4, 4)
        assert dataset.offset == Coordinate(400, 40, 40)
        assert dataset.shape == ANISOTROPIC_SHAPE
    assert read(anisotropic, "raw").dtype == np.uint8
    assert read(anisotropic, "labels").dtype == np.uint64


def test_every_label_is_one_connected_cell_without_background(pair):
    train, _ = pair
    labels = read(train, "labels")
    ids = np.unique(labels)
    assert ids[0] >= 1 and len(ids) >= 5
    _, pieces = ndimage.label(labels == ids[len(ids) // 2])
    assert pieces == 1


@pytest.mark.parametrize("which", ["isotropic", "anisotropic"])
def test_organelles_lie_inside_cells_and_off_boundaries(pair, anisotropic, which):
    volume = pair[0] if which == "isotropic" else anisotropic
    labels, organelles = read(volume, "labels"), read(volume, "organelles")
    assert (organelles == 1).any() and (organelles == 2).any()
    assert not (organelles[cell_borders(labels)]).any()
    distance = surface_distance(labels, np.asarray(volume.voxel_size, dtype=np.float64))
    assert distance[organelles > 0].min() >= ORGANELLE_MARGIN_NM - 1e-3
    pieces, count = ndimage.label(organelles > 0)
    for piece in range(1, count + 1):
        assert len(np.unique(labels[pieces == piece])) == 1


def test_organelles_are_dark_like_membranes_but_are_not_labelled_as_boundaries(pair):
    train, _ = pair
    raw, labels = read(train, "raw").astype(np.float64), read(train, "labels")
    organelles = read(train, "organelles")
    membrane = cell_borders(labels)
    cytoplasm = ~membrane & (organelles == 0)
    mitochondria = ndimage.binary_erosion(organelles == 1)
    assert raw[cytoplasm].mean() - raw[membrane].mean() > 30
    assert raw[cytoplasm].mean() - raw[mitochondria].mean() > 30


def test_signal_to_noise_is_low(pair):
    """Single voxels do not decide membrane or not: the classes overlap in intensity."""
    train, _ = pair
    raw, labels = read(train, "raw").astype(np.float64), read(train, "labels")
    membrane = cell_borders(labels)
    darkest_cytoplasm = np.percentile(raw[~membrane], 10)
    assert (raw[membrane] > darkest_cytoplasm).mean() > 0.1


def test_heldout_volume_is_drawn_with_another_seed(pair):
    train, heldout = pair
    assert heldout.seed == train.seed + HELDOUT_SEED_OFFSET
    assert train.container.name == "train.zarr" and heldout.container.name == "heldout.zarr"
    assert heldout.voxel_size == train.voxel_size and heldout.shape == train.shape
    for name in ("raw", "labels"):
        assert not np.array_equal(read(train, name), read(heldout, name))


def test_same_seed_gives_the_same_volume(tmp_path):
    first = make_em_volume(tmp_path / "a.zarr", shape=(24, 32, 32), seed=9, shifted_sections=1)
    again = make_em_volume(tmp_path / "b.zarr", shape=(24, 32, 32), seed=9, shifted_sections=1)
    for name in ("raw", "labels", "mask", "organelles"):
        np.testing.assert_array_equal(read(first, name), read(again, name))


def test_defects_are_where_the_volume_says(tmp_path):
    clean = make_em_volume(tmp_path / "clean.zarr", shape=(24, 40, 40), num_cells=40, seed=2)
    defect = make_em_volume(
        tmp_path / "defect.zarr",
        shape=(24, 40, 40),
        num_cells=40,
        seed=2,
        missing_sections=2,
        shifted_sections=1,
    )
    assert len(defect.missing_sections) == 2 and len(defect.shifted_sections) == 1
    raw = read(defect, "raw")
    for z in defect.missing_sections:
        assert (raw[z] == 0).all()
    assert (raw[[z for z in range(24) if z not in defect.missing_sections]] > 0).mean() > 0.9
    (shifted,) = defect.shifted_sections
    clean_labels, labels = read(clean, "labels"), read(defect, "labels")
    assert not np.array_equal(labels[shifted], clean_labels[shifted])
    # the section moved as a whole: one in-plane shift maps the clean section onto it
    inner = (slice(8, -8), slice(8, -8))
    moved = [
        (dy, dx)
        for dy in range(-7, 8)
        for dx in range(-7, 8)
        if np.array_equal(
            np.roll(clean_labels[shifted], (dy, dx), (0, 1))[inner], labels[shifted][inner]
        )
    ]
    assert len(moved) == 1 and moved[0] != (0, 0)
    unshifted = [z for z in range(24) if z != shifted]
    np.testing.assert_array_equal(labels[unshifted], clean_labels[unshifted])
    attrs = zarr.open_group(str(defect.container), mode="r").attrs["voltrain_synthetic_em"]
    assert attrs["missing_sections"] == list(defect.missing_sections)


def test_mask_fraction_below_one_masks_blobs(tmp_path):
    volume = make_em_volume(tmp_path / "m.zarr", shape=(32, 32, 32), mask_fraction=0.5, seed=1)
    assert read(volume, "mask").mean() == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"missing_sections": 20, "shifted_sections": 10},
        {"noise_std": -0.1},
        {"missing_sections": -1},
        {"offset": (3, 0, 0)},
    ],
)
def test_bad_arguments_raise_config_error(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        make_em_volume(tmp_path / "bad.zarr", shape=(24, 24, 24), **kwargs)
    assert not (tmp_path / "bad.zarr").exists()


def test_unknown_variant_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="variant"):
        make_em_pair(tmp_path, "confocal")
