"""Per-voxel random numbers: a normal distribution, the same values in any order."""

import numpy as np
import pytest
from scipy import stats

from voltrain.kernels.counter_rng import NOISE_MODE_CODES, add_noise, add_noise_row, seed_key


def test_gaussian_noise_is_normal_with_the_configured_variance():
    noise = add_noise(np.zeros(400_000, np.float32), 5, "gaussian", 0.04, 0.0, clip=False)
    noise = noise.astype(np.float64)
    assert abs(noise.mean()) < 0.001
    assert noise.var() == pytest.approx(0.04, rel=0.01)
    assert stats.kstest(noise / 0.2, "norm").pvalue > 0.001
    # the tails beyond the inverse-CDF table are drawn too, as often as a normal has them
    assert np.mean(np.abs(noise) > 0.2 * 3.6) == pytest.approx(2 * stats.norm.sf(3.6), rel=0.3)


def test_neighbouring_voxels_and_seeds_are_uncorrelated():
    a = add_noise(np.zeros(200_000, np.float32), 1, "gaussian", 1.0, 0.0, clip=False)
    b = add_noise(np.zeros(200_000, np.float32), 2, "gaussian", 1.0, 0.0, clip=False)
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.01
    assert abs(np.corrcoef(a[0::2], a[1::2])[0, 1]) < 0.01
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01


@pytest.mark.parametrize("mode", ["gaussian", "poisson", "s&p"])
def test_a_voxel_gets_the_same_noise_whatever_order_rows_are_drawn_in(mode):
    # the fused kernel adds noise row by row, starting at odd and even voxel indices
    data = np.random.default_rng(0).random((5, 7, 9)).astype(np.float32)
    whole = add_noise(data, 11, mode, 0.01, 0.2, clip=True)
    rows = data.copy().reshape(-1, 9)
    param = 0.1 if mode == "gaussian" else 0.01  # gaussian takes the standard deviation
    key, code = seed_key(11), NOISE_MODE_CODES[mode]
    for r in reversed(range(len(rows))):
        add_noise_row(rows[r], rows[r], key, r * 9, code, param, 0.2, True)
    np.testing.assert_array_equal(rows.reshape(data.shape), whole)
