"""Built-in augment configs: ranges validated, YAML round-trip, nodes change the right arrays."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
import pydantic
import pytest
import yaml
from funlib.persistence import Array

import voltrain.augments.gamma
import voltrain.augments.intensity
import voltrain.augments.intensity_scale_shift
import voltrain.augments.noise
import voltrain.augments.simple  # noqa: F401  (registers the built-ins)
from voltrain.augments.base import parse_augment

RAW = gp.ArrayKey("RAW")
GT = gp.ArrayKey("GT")
MASK = gp.ArrayKey("MASK")
SHAPE = (6, 6, 6)

INTENSITY_LIKE = [
    {"type": "intensity", "scale_min": 0.8, "scale_max": 1.2, "shift_min": -0.1, "shift_max": 0.1},
    {"type": "gamma", "gamma_min": 0.5, "gamma_max": 2.0},
    {"type": "intensity_scale_shift", "scale": 2.0, "shift": -1.0},
    {"type": "noise", "mode": "gaussian", "var": 0.01},
    {"type": "noise", "mode": "poisson", "var": 0.01, "clip": False},
    {"type": "noise", "mode": "s&p", "amount": 0.2},
]
SPATIAL = [
    {"type": "simple"},
    {"type": "simple", "mirror_axes": [1, 2], "transpose_axes": [1, 2], "p": 0.9},
    {"type": "simple", "mirror_axes": [], "transpose_axes": [0, 2], "mirror_probability": 0.0},
]

BAD = [
    ({"type": "intensity", "scale_min": 1.2, "scale_max": 0.8}, "scale_min"),
    ({"type": "intensity", "shift_min": 0.2, "shift_max": -0.2}, "shift_min"),
    ({"type": "intensity", "scale_min": -1.0}, "scale_min"),
    ({"type": "intensity", "scale": 1.0}, "scale"),
    ({"type": "gamma", "gamma_min": 0.0}, "gamma_min"),
    ({"type": "gamma", "gamma_min": 2.0, "gamma_max": 1.0}, "gamma_min"),
    ({"type": "intensity_scale_shift", "scale": 2.0}, "shift"),
    ({"type": "noise", "mode": "speckle"}, "mode"),
    ({"type": "noise", "var": -0.01}, "var"),
    ({"type": "noise", "amount": 1.5}, "amount"),
    ({"type": "simple", "mirror_probability": 1.5}, "mirror_probability"),
    ({"type": "simple", "mirror_axes": [-1]}, "mirror_axes"),
    ({"type": "simple", "transpose_axes": [1, 1]}, "transpose_axes"),
    ({"type": "gamma", "p": 1.5}, "p"),
    ({"type": "noise", "p": -0.1}, "p"),
]


@pytest.mark.parametrize(("data", "key"), BAD, ids=[f"{d['type']}-{k}" for d, k in BAD])
def test_bad_values_are_rejected_naming_the_key(data, key):
    with pytest.raises(pydantic.ValidationError, match=key):
        parse_augment(data)


@pytest.mark.parametrize("data", INTENSITY_LIKE + SPATIAL, ids=lambda d: d["type"])
def test_yaml_round_trip_gives_the_same_config(data):
    config = parse_augment(data)
    assert config.model_dump()["type"] == data["type"]
    for key, value in data.items():
        assert getattr(config, key) == value
    reloaded = parse_augment(yaml.safe_load(yaml.safe_dump(config.model_dump())))
    assert reloaded == config and type(reloaded) is type(config)


def run(node: gp.BatchFilter, seeds, sources: dict[gp.ArrayKey, np.ndarray]) -> list[gp.Batch]:
    pipeline = (
        tuple(
            gp.ArraySource(key, Array(data, offset=(0, 0, 0), voxel_size=(4, 4, 4)))
            for key, data in sources.items()
        )
        + gp.MergeProvider()
        + node
    )
    batches = []
    with gp.build(pipeline):
        for seed in seeds:
            request = gp.BatchRequest(random_seed=seed)
            for key in sources:
                request.add(key, (24, 24, 24))
            batches.append(pipeline.request_batch(request))
    return batches


@pytest.mark.parametrize("data", INTENSITY_LIKE, ids=lambda d: f"{d['type']}-{d.get('mode', '')}")
def test_intensity_like_nodes_change_raw_only(data):
    rng = np.random.default_rng(0)
    sources = {
        RAW: rng.uniform(0.2, 0.8, SHAPE).astype(np.float32),
        GT: rng.integers(0, 4, SHAPE).astype(np.uint64),
        MASK: rng.integers(0, 2, SHAPE).astype(np.uint8),
    }
    config = parse_augment(data)
    for batch in run(config.node(RAW, GT, MASK), range(3), sources):
        assert not np.array_equal(batch[RAW].data, sources[RAW])
        assert batch[RAW].data.dtype == np.float32
        np.testing.assert_array_equal(batch[GT].data, sources[GT])
        np.testing.assert_array_equal(batch[MASK].data, sources[MASK])


@pytest.mark.parametrize("data", SPATIAL, ids=lambda d: str(d.get("transpose_axes")))
def test_simple_moves_raw_gt_and_mask_identically(data):
    ids = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    sources = {
        RAW: ids.astype(np.float32),
        GT: ids.astype(np.uint64),
        MASK: (ids % 2).astype(np.uint8),
    }
    config = parse_augment(data)
    moved = 0
    for batch in run(config.node(RAW, GT, MASK), range(20), sources):
        np.testing.assert_array_equal(batch[RAW].data, batch[GT].data.astype(np.float32))
        np.testing.assert_array_equal(batch[MASK].data, batch[GT].data % 2)
        np.testing.assert_array_equal(np.sort(batch[GT].data, axis=None), ids.ravel())
        moved += not np.array_equal(batch[GT].data, ids)
    assert moved >= 5, "most draws move voxels"
