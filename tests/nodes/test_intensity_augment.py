"""IntensityAugment: raw becomes raw * scale + shift with drawn scale/shift; nothing else."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
import pytest
from scipy import stats

from tests.helpers.intensity_pipeline import GT, MASK, RAW, SOURCES, run
from voltrain.errors import ConfigError
from voltrain.nodes.intensity_augment import IntensityAugment


def fit_line(batch: gp.Batch) -> tuple[float, float]:
    slope, intercept = np.polyfit(SOURCES[RAW].ravel(), batch[RAW].data.ravel(), 1)
    return float(slope), float(intercept)


def test_raw_is_scaled_and_shifted_within_the_ranges_and_gt_mask_untouched():
    node = IntensityAugment(RAW, 0.8, 1.2, -0.1, 0.1, clip=False)
    for batch in run(node, range(20)):
        slope, intercept = fit_line(batch)
        assert 0.8 - 1e-4 <= slope <= 1.2 + 1e-4
        assert -0.1 - 1e-4 <= intercept <= 0.1 + 1e-4
        assert batch[RAW].data.dtype == np.float32
        np.testing.assert_array_equal(batch[GT].data, SOURCES[GT])
        np.testing.assert_array_equal(batch[MASK].data, SOURCES[MASK])


def test_clip_keeps_raw_in_unit_range():
    node = IntensityAugment(RAW, 2.0, 2.0, 0.5, 0.5, clip=True)
    (batch,) = run(node, [0])
    assert batch[RAW].data.min() >= 0.0 and batch[RAW].data.max() <= 1.0
    np.testing.assert_array_equal(batch[RAW].data, 1.0)


def test_same_seed_replays_and_different_seeds_differ():
    node = IntensityAugment(RAW, 0.5, 1.5, -0.2, 0.2, clip=False)
    first, again, other = run(node, [3, 3, 4])
    np.testing.assert_array_equal(first[RAW].data, again[RAW].data)
    assert not np.array_equal(first[RAW].data, other[RAW].data)


def test_p_zero_leaves_raw_unchanged():
    node = IntensityAugment(RAW, 0.5, 1.5, -0.2, 0.2, p=0.0)
    for batch in run(node, range(10)):
        np.testing.assert_array_equal(batch[RAW].data, SOURCES[RAW])


def test_applied_fraction_is_about_p():
    node = IntensityAugment(RAW, 0.5, 1.5, -0.2, 0.2, clip=False, p=0.4)
    batches = run(node, range(200))
    applied = np.mean([not np.array_equal(b[RAW].data, SOURCES[RAW]) for b in batches])
    assert 0.3 < applied < 0.5


def test_drawn_parameters_are_uniform_in_their_ranges():
    node = IntensityAugment(RAW, 0.5, 1.5, -0.2, 0.3)
    draws = [node.make_params(np.random.default_rng(seed)) for seed in range(200)]
    scales = np.array([d.scale for d in draws])
    shifts = np.array([d.shift for d in draws])
    assert 0.5 <= scales.min() and scales.max() <= 1.5
    assert -0.2 <= shifts.min() and shifts.max() <= 0.3
    assert stats.kstest(scales, stats.uniform(0.5, 1.0).cdf).pvalue > 0.01
    assert stats.kstest(shifts, stats.uniform(-0.2, 0.5).cdf).pvalue > 0.01
    assert np.ptp(scales) > 0.9 and np.ptp(shifts) > 0.45, "draws span the ranges"


@pytest.mark.parametrize("args", [(1.2, 0.8, 0.0, 0.0), (1.0, 1.0, 0.1, -0.1)])
def test_reversed_ranges_are_rejected(args):
    with pytest.raises(ConfigError, match="_min"):
        IntensityAugment(RAW, *args)
