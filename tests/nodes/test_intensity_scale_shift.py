"""IntensityScaleShift: raw becomes raw * scale + shift exactly; nothing else."""

from __future__ import annotations

import numpy as np

from tests.helpers.intensity_pipeline import GT, MASK, RAW, SOURCES, run
from voltrain.nodes.intensity_scale_shift import IntensityScaleShift


def test_maps_unit_range_to_minus_one_one_and_leaves_gt_mask():
    (batch,) = run(IntensityScaleShift(RAW, scale=2.0, shift=-1.0), [0])
    np.testing.assert_allclose(batch[RAW].data, SOURCES[RAW] * 2 - 1, rtol=1e-6)
    assert batch[RAW].data.dtype == np.float32
    np.testing.assert_array_equal(batch[GT].data, SOURCES[GT])
    np.testing.assert_array_equal(batch[MASK].data, SOURCES[MASK])


def test_values_outside_the_unit_range_are_not_clipped():
    (batch,) = run(IntensityScaleShift(RAW, scale=4.0, shift=-2.0), [0])
    np.testing.assert_allclose(batch[RAW].data, SOURCES[RAW] * 4 - 2, rtol=1e-6)
    assert batch[RAW].data.min() < 0.0 and batch[RAW].data.max() > 0.5


def test_every_seed_gives_the_same_result_with_p_one():
    batches = run(IntensityScaleShift(RAW, scale=0.5, shift=0.25), range(5))
    for batch in batches:
        np.testing.assert_array_equal(batch[RAW].data, batches[0][RAW].data)


def test_p_zero_leaves_raw_unchanged():
    for batch in run(IntensityScaleShift(RAW, scale=2.0, shift=-1.0, p=0.0), range(10)):
        np.testing.assert_array_equal(batch[RAW].data, SOURCES[RAW])


def test_applied_fraction_is_about_p_and_replays_per_seed():
    node = IntensityScaleShift(RAW, scale=2.0, shift=-1.0, p=0.5)
    batches = run(node, list(range(200)) + [0])
    applied = [not np.array_equal(b[RAW].data, SOURCES[RAW]) for b in batches]
    assert 0.4 < np.mean(applied[:200]) < 0.6
    assert applied[0] == applied[200]
