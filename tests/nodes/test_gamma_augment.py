"""GammaAugment: raw becomes raw ** gamma with gamma log-uniform in range; nothing else."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
import pytest
from scipy import stats

from tests.helpers.intensity_pipeline import GT, MASK, RAW, SOURCES, run
from voltrain.errors import ConfigError
from voltrain.nodes.gamma_augment import GammaAugment, GammaParams


def fitted_gamma(batch: gp.Batch) -> float:
    # raw ** gamma is a line through the origin in log-log space
    log_in = np.log(SOURCES[RAW].ravel().astype(np.float64))
    log_out = np.log(batch[RAW].data.ravel().astype(np.float64))
    return float(np.sum(log_in * log_out) / np.sum(log_in * log_in))


def test_raw_is_raised_to_a_gamma_in_range_and_gt_mask_untouched():
    node = GammaAugment(RAW, 0.5, 2.0)
    for batch in run(node, range(20)):
        gamma = fitted_gamma(batch)
        assert 0.5 - 1e-3 <= gamma <= 2.0 + 1e-3
        np.testing.assert_allclose(batch[RAW].data, SOURCES[RAW] ** gamma, rtol=1e-4)
        assert batch[RAW].data.dtype == np.float32
        np.testing.assert_array_equal(batch[GT].data, SOURCES[GT])
        np.testing.assert_array_equal(batch[MASK].data, SOURCES[MASK])


def test_negative_values_keep_their_sign_instead_of_becoming_nan():
    node = GammaAugment(RAW, 0.5, 2.0)
    data = np.array([-0.25, 0.0, 0.25, 1.0], dtype=np.float32)
    out = node.apply_transform(data, GammaParams(apply=True, gamma=2.0))
    np.testing.assert_allclose(out, [-0.0625, 0.0, 0.0625, 1.0])
    out = node.apply_transform(data, GammaParams(apply=True, gamma=0.5))
    assert np.all(np.isfinite(out)) and out[0] == -0.5


def test_same_seed_replays_and_different_seeds_differ():
    node = GammaAugment(RAW, 0.5, 2.0)
    first, again, other = run(node, [3, 3, 4])
    np.testing.assert_array_equal(first[RAW].data, again[RAW].data)
    assert not np.array_equal(first[RAW].data, other[RAW].data)


def test_p_zero_leaves_raw_unchanged():
    for batch in run(GammaAugment(RAW, 0.5, 2.0, p=0.0), range(10)):
        np.testing.assert_array_equal(batch[RAW].data, SOURCES[RAW])


def test_applied_fraction_is_about_p():
    batches = run(GammaAugment(RAW, 0.5, 2.0, p=0.7), range(200))
    applied = np.mean([not np.array_equal(b[RAW].data, SOURCES[RAW]) for b in batches])
    assert 0.6 < applied < 0.8


def test_gamma_is_log_uniform_in_its_range():
    node = GammaAugment(RAW, 0.5, 2.0)
    gammas = np.array([node.make_params(np.random.default_rng(s)).gamma for s in range(200)])
    assert 0.5 <= gammas.min() and gammas.max() <= 2.0
    log_range = stats.uniform(np.log(0.5), np.log(4.0))
    assert stats.kstest(np.log(gammas), log_range.cdf).pvalue > 0.01
    # darkening and brightening are equally likely
    assert 0.4 < np.mean(gammas < 1.0) < 0.6


@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_ranges_are_rejected(bounds):
    with pytest.raises(ConfigError, match="gamma_min"):
        GammaAugment(RAW, *bounds)
