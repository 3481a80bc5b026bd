"""NoiseAugment: gaussian, poisson and salt-and-pepper noise on raw only, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.intensity_pipeline import GT, MASK, RAW, SOURCES, run
from voltrain.errors import ConfigError
from voltrain.nodes.noise_augment import NoiseAugment, NoiseParams


def noise_of(node: NoiseAugment, data: np.ndarray, seed: int = 0) -> np.ndarray:
    return node.apply_transform(data, NoiseParams(apply=True, noise_seed=seed)) - data


@pytest.mark.parametrize("mode", ["gaussian", "poisson", "s&p"])
def test_only_raw_changes(mode):
    (batch,) = run(NoiseAugment(RAW, mode=mode, var=0.01, amount=0.2), [0])
    assert not np.array_equal(batch[RAW].data, SOURCES[RAW])
    assert batch[RAW].data.dtype == np.float32
    np.testing.assert_array_equal(batch[GT].data, SOURCES[GT])
    np.testing.assert_array_equal(batch[MASK].data, SOURCES[MASK])


def test_gaussian_noise_has_the_configured_variance():
    node = NoiseAugment(RAW, mode="gaussian", var=0.0025, clip=False)
    noise = noise_of(node, np.full((40, 40, 40), 0.5, dtype=np.float32))
    assert abs(noise.mean()) < 0.002
    assert noise.var() == pytest.approx(0.0025, rel=0.03)


def test_poisson_noise_variance_grows_with_intensity():
    node = NoiseAugment(RAW, mode="poisson", var=0.01, clip=False)
    for level in (0.1, 0.5, 1.0):
        noise = noise_of(node, np.full((40, 40, 40), level, dtype=np.float32))
        assert abs(noise.mean()) < 0.003
        # shot noise: variance = raw * var, i.e. a peak of 1 / var photons
        assert noise.var() == pytest.approx(level * 0.01, rel=0.05)
    dark = noise_of(node, np.zeros((10, 10, 10), dtype=np.float32))
    np.testing.assert_array_equal(dark, 0.0)


def test_salt_and_pepper_replaces_the_configured_fraction_with_zero_or_one():
    node = NoiseAugment(RAW, mode="s&p", amount=0.1)
    data = np.full((40, 40, 40), 0.5, dtype=np.float32)
    out = node.apply_transform(data, NoiseParams(apply=True, noise_seed=1))
    assert set(np.unique(out).tolist()) == {0.0, 0.5, 1.0}
    assert np.mean(out != 0.5) == pytest.approx(0.1, abs=0.01)
    assert np.mean(out == 0.0) == pytest.approx(0.05, abs=0.01)


def test_clip_keeps_raw_in_unit_range():
    node = NoiseAugment(RAW, mode="gaussian", var=0.25, clip=True)
    (batch,) = run(node, [0])
    assert batch[RAW].data.min() == 0.0 and batch[RAW].data.max() == 1.0


def test_input_array_is_not_modified():
    data = np.full((8, 8, 8), 0.5, dtype=np.float32)
    NoiseAugment(RAW, mode="s&p", amount=0.5).apply_transform(data, NoiseParams(True, 0))
    NoiseAugment(RAW, mode="gaussian").apply_transform(data, NoiseParams(True, 0))
    np.testing.assert_array_equal(data, 0.5)


@pytest.mark.parametrize("mode", ["gaussian", "poisson", "s&p"])
def test_same_seed_replays_and_different_seeds_differ(mode):
    first, again, other = run(NoiseAugment(RAW, mode=mode, amount=0.3), [3, 3, 4])
    np.testing.assert_array_equal(first[RAW].data, again[RAW].data)
    assert not np.array_equal(first[RAW].data, other[RAW].data)


def test_p_zero_leaves_raw_unchanged_and_fraction_is_about_p():
    for batch in run(NoiseAugment(RAW, p=0.0), range(10)):
        np.testing.assert_array_equal(batch[RAW].data, SOURCES[RAW])
    batches = run(NoiseAugment(RAW, p=0.25), range(200))
    applied = np.mean([not np.array_equal(b[RAW].data, SOURCES[RAW]) for b in batches])
    assert 0.17 < applied < 0.33


def test_noise_seeds_are_spread_across_draws():
    node = NoiseAugment(RAW)
    seeds = {node.make_params(np.random.default_rng(s)).noise_seed for s in range(200)}
    assert len(seeds) == 200


@pytest.mark.parametrize(
    "kwargs", [{"mode": "speckle"}, {"var": -0.1}, {"amount": 1.5}, {"p": 2.0}]
)
def test_bad_values_are_rejected(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        NoiseAugment(RAW, **kwargs)
