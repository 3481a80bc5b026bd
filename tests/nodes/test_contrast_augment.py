"""ContrastAugment and ClaheAugment: per-section contrast, gamma and CLAHE on raw only."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.section_pipeline import RAW, assert_labels_kept, run
from voltrain.nodes.clahe_augment import ClaheAugment
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


def dull_and_crisp(shape=(4, 64, 64)) -> np.ndarray:
    """Left half: texture over [0, 1]; right half: the same texture squeezed into
    [0.45, 0.55], a low-contrast region."""
    texture = np.random.default_rng(5).random(shape, dtype=np.float32)
    data = texture.copy()
    half = shape[-1] // 2
    data[..., half:] = 0.45 + 0.1 * texture[..., half:]
    return data


@pytest.mark.parametrize("per_section", [True, False])
def test_clahe_raises_the_contrast_of_a_low_contrast_region_only(per_section):
    data = dull_and_crisp()
    node = ClaheAugment(
        RAW, kernel_size=16.0, clip_limit_min=0.05, clip_limit_max=0.05, per_section=per_section
    )
    (batch,) = run(node, [0], data)
    out = batch[RAW].data
    dull = (Ellipsis, slice(None), slice(40, 64))  # clear of the crisp half's kernels
    assert out[dull].std() > 3 * data[dull].std()
    crisp = (Ellipsis, slice(None), slice(0, 24))
    assert out[crisp].std() == pytest.approx(data[crisp].std(), rel=0.2)
    # the value range is the input's (sections', in 2D), never wider
    assert out.min() >= data.min() and out.max() <= data.max()
    assert_labels_kept(batch, data)


def test_clahe_leaves_undrawn_and_flat_sections_as_they_are():
    data = dull_and_crisp((8, 32, 32))
    data[3] = 0.5
    node = ClaheAugment(RAW, section_probability=0.5)
    (batch,) = run(node, [1], data)
    out = batch[RAW].data
    changed = [z for z in range(8) if not np.array_equal(out[z], data[z])]
    assert changed == [z for z in node._params.sections if z != 3] and changed


def test_clahe_kernel_size_is_in_world_units():
    node = ClaheAugment(RAW, kernel_size=64.0)
    run(node, [0], dull_and_crisp((4, 32, 32)), (40, 4, 4))
    assert node._params.kernel == (16, 16)
    node_3d = ClaheAugment(RAW, kernel_size=[80.0, 64.0, 32.0], per_section=False)
    run(node_3d, [0], dull_and_crisp((4, 32, 32)), (40, 4, 4))
    assert node_3d._params.kernel == (2, 16, 8)


def test_clahe_same_seed_replays_and_p_zero_does_nothing():
    data = dull_and_crisp((4, 32, 32))
    node = ClaheAugment(RAW, clip_limit_min=0.01, clip_limit_max=0.5)
    first, again, other = run(node, [3, 3, 4], data)
    np.testing.assert_array_equal(first[RAW].data, again[RAW].data)
    assert not np.array_equal(first[RAW].data, other[RAW].data)
    for batch in run(ClaheAugment(RAW, p=0.0), range(3), data):
        np.testing.assert_array_equal(batch[RAW].data, data)
