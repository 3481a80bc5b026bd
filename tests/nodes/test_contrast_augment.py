"""ContrastAugment: per-section (or whole-sample) contrast and gamma on raw only, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.section_pipeline import RAW, assert_labels_kept, run
from voltrain.nodes.contrast_augment import ContrastAugment

_rng = np.random.default_rng(0)
# each section its own mean and spread, inside (0.2, 0.8): a factor up to 1.5 does not clip
SECTIONS = (_rng.uniform(0.4, 0.6, (10, 1, 1)) + _rng.uniform(-0.1, 0.1, (10, 24, 24))).astype(
    np.float32
)


def test_each_section_std_changes_by_its_own_factor_around_its_mean():
    node = ContrastAugment(RAW, 0.5, 1.5, gamma_min=1.0, gamma_max=1.0)
    (batch,) = run(node, [1], SECTIONS)
    out, factors = batch[RAW].data, node._params.factors
    assert node._params.sections == tuple(range(10)) and len(set(factors)) == 10
    for z, factor in enumerate(factors):
        assert out[z].std() == pytest.approx(factor * SECTIONS[z].std(), rel=1e-4)
        assert out[z].mean() == pytest.approx(SECTIONS[z].mean(), abs=1e-5)
    assert_labels_kept(batch, SECTIONS)


def test_sample_centre_pulls_every_section_towards_one_level():
    node = ContrastAugment(RAW, 0.5, 0.5, 1.0, 1.0, centre="sample", per_section=False)
    (batch,) = run(node, [0], SECTIONS)
    centre = SECTIONS.mean()
    expected = centre + 0.5 * (SECTIONS - centre)
    np.testing.assert_allclose(batch[RAW].data, expected, atol=1e-6)


def test_gamma_maps_each_section_as_a_power():
    node = ContrastAugment(RAW, 1.0, 1.0, gamma_min=0.5, gamma_max=2.0, clip=False)
    (batch,) = run(node, [2], SECTIONS)
    gammas = node._params.gammas
    assert min(gammas) < 0.9 and max(gammas) > 1.1
    for z, gamma in enumerate(gammas):
        np.testing.assert_allclose(batch[RAW].data[z], SECTIONS[z] ** gamma, rtol=1e-5)


def test_only_the_drawn_sections_change_and_raw_stays_in_the_unit_range():
    node = ContrastAugment(RAW, 2.0, 3.0, section_probability=0.5)
    (batch,) = run(node, [4], SECTIONS)
    out = batch[RAW].data
    changed = [z for z in range(10) if not np.array_equal(out[z], SECTIONS[z])]
    assert changed == list(node._params.sections) and 0 < len(changed) < 10
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_contrast_same_seed_replays_different_seeds_differ_and_p_zero_does_nothing():
    node = ContrastAugment(RAW)
    first, again, other = run(node, [3, 3, 4], SECTIONS)
    np.testing.assert_array_equal(first[RAW].data, again[RAW].data)
    assert not np.array_equal(first[RAW].data, other[RAW].data)
    for batch in run(ContrastAugment(RAW, p=0.0), range(5), SECTIONS):
        np.testing.assert_array_equal(batch[RAW].data, SECTIONS)
