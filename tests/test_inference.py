"""The shared inference path: the input section, tiling, centring."""

from __future__ import annotations

import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi

from tests.helpers import experiment_dict
from voltrain.blocks.record import tile_roi
from voltrain.errors import ConfigError
from voltrain.experiment import parse_config
from voltrain.inference import IntensityMap, check_centred
from voltrain.models.unet import build_model

SCALE_SHIFT = {"type": "intensity_scale_shift", "scale": 2.0, "shift": -1.0}


def test_tiles_cover_the_roi_from_its_offset_and_the_last_may_overhang():
    roi = Roi((8, 0, 0), (20, 16, 8))
    blocks = tile_roi(roi, Coordinate(8, 8, 8))
    assert len(blocks) == 3 * 2 * 1
    assert blocks[0] == Roi((8, 0, 0), (8, 8, 8))
    covered = blocks[0]
    for block in blocks[1:]:
        covered = covered.union(block)
    assert covered.contains(roi) and covered.end == (32, 16, 8)


def test_an_odd_crop_names_the_config_key():
    check_centred((36, 36, 36), (20, 20, 20), "trainer.input_shape")
    with pytest.raises(ConfigError, match="trainer.input_shape: input_shape"):
        check_centred((36, 36, 35), (20, 20, 20), "trainer.input_shape")


def _sample(volume, **experiment):
    raw = experiment_dict(volume)
    raw.update(experiment)
    config = parse_config(raw)
    model = build_model(config.model, 1, config.task.build().num_channels)
    trainer = config.trainer.build()
    trainer.input = config.input
    trainer.build_batch_provider(config.data.train, model, config.task)
    return trainer.pipeline.request_sample(3)["raw"]


def test_input_section_maps_are_applied_to_training_samples(volume):
    # The same graph as an intensity_scale_shift augment last in the chain (a node more in
    # the graph changes gunpowder's seeds, so the plain sample is drawn elsewhere).
    mapped = _sample(volume, input={"intensity_maps": [{"scale": 2.0, "shift": -1.0}]})
    plain = _sample(volume)
    as_augment = _sample(volume, trainer=experiment_dict(volume, augments=[SCALE_SHIFT])["trainer"])
    np.testing.assert_array_equal(mapped, as_augment)
    assert mapped.min() == -1.0 and plain.min() == 0.0  # outside the raw array: zeros, mapped
    halved = _sample(volume, input={"normalize_factor": 0.5 / 255})
    np.testing.assert_allclose(halved, plain / 2, atol=1e-6)


def test_older_keys_and_the_input_section_make_one_input(volume):
    raw = experiment_dict(volume, normalize_factor=0.01, augments=[SCALE_SHIFT])
    raw["input"] = {"intensity_maps": [{"scale": 0.5, "shift": 0.0}]}
    resolved = parse_config(raw).resolved_input()
    assert resolved.normalize_factor == 0.01
    assert resolved.intensity_maps == [
        IntensityMap(scale=2.0, shift=-1.0),
        IntensityMap(scale=0.5, shift=0.0),
    ]


def test_two_normalize_factors_are_refused(volume):
    raw = experiment_dict(volume, normalize_factor=0.01)
    raw["input"] = {"normalize_factor": 0.02}
    with pytest.raises(ConfigError, match="give only input.normalize_factor"):
        parse_config(raw)


def test_deform_on_device_rule_is_checked_when_the_config_is_read(volume):
    raw = experiment_dict(volume, deform_on_device=True, augments=[SCALE_SHIFT])
    with pytest.raises(ConfigError, match="trainer.deform_on_device needs trainer.augments"):
        parse_config(raw)
    elastic = {"type": "elastic", "control_point_spacing": [40] * 3, "jitter_sigma": [8] * 3}
    raw = experiment_dict(volume, deform_on_device=True, augments=[elastic])
    raw["input"] = {"intensity_maps": [{"scale": 2.0, "shift": -1.0}]}
    with pytest.raises(ConfigError, match="input.intensity_maps"):
        parse_config(raw)
