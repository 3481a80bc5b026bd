import numpy as np
import pytest

from voltrain.baseline import intensity_affinities, normalised_intensity
from voltrain.errors import DataError

NEIGHBORHOOD = [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]


def two_cells_with_a_dark_membrane(z_membrane: int = 8) -> np.ndarray:
    raw = np.full((16, 12, 12), 200, dtype=np.uint8)
    raw[z_membrane] = 30
    return raw


def test_affinities_are_float32_in_unit_range_one_channel_per_offset():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (10, 12, 14), dtype=np.uint8)
    affinities = intensity_affinities(raw, NEIGHBORHOOD, (8, 8, 8))
    assert affinities.shape == (3, 10, 12, 14) and affinities.dtype == np.float32
    assert affinities.min() >= 0.0 and affinities.max() <= 1.0


def test_a_dark_plane_cuts_the_affinities_across_it_with_voltrains_convention():
    """Channel (-1, 0, 0) at z pairs z with z - 1, as AffinityTarget's targets do."""
    affinities = intensity_affinities(two_cells_with_a_dark_membrane(8), NEIGHBORHOOD, (8, 8, 8), 0)
    z_affinity = affinities[0, :, 6, 6]
    assert z_affinity[8] < 0.1 and z_affinity[9] < 0.1  # pairs (8, 7) and (9, 8)
    assert (np.delete(z_affinity, [8, 9]) > 0.9).all()
    # in-plane neighbours inside the membrane are dark too, elsewhere bright
    assert affinities[1, 8].max() < 0.1 and affinities[1, 4].min() > 0.9


def test_smoothing_is_in_world_units():
    """At 40 nm sections, 8 nm of smoothing barely reaches the next section."""
    raw = two_cells_with_a_dark_membrane(8)
    isotropic = normalised_intensity(raw, (8, 8, 8), smoothing_nm=8)
    anisotropic = normalised_intensity(raw, (40, 8, 8), smoothing_nm=8)
    assert anisotropic[7, 6, 6] > isotropic[7, 6, 6]


def test_raw_and_voxel_size_of_different_dimensions_is_a_data_error():
    with pytest.raises(DataError, match="voxel size"):
        intensity_affinities(np.zeros((4, 4, 4), np.uint8), NEIGHBORHOOD, (8, 8))
