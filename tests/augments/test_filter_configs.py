"""The blur, contrast and cutout configs: key errors, their place in the training graph,
deform_on_device's refusal, and a short training run with all three."""

from __future__ import annotations

import json

import gunpowder as gp
import numpy as np
import pydantic
import pytest
import yaml

from tests.helpers import experiment_dict
from voltrain.augments import parse_augment, parse_augments
from voltrain.cli import main
from voltrain.errors import ConfigError
from voltrain.experiment import load_config, parse_config
from voltrain.models.unet import build_model
from voltrain.nodes.blur_augment import BlurAugment
from voltrain.nodes.clahe_augment import ClaheAugment
from voltrain.nodes.contrast_augment import ContrastAugment
from voltrain.nodes.cutout_augment import CutoutAugment
from voltrain.nodes.fused_augment import FusedAugment
from voltrain.nodes.mirror_transpose_augment import MirrorTransposeAugment
from voltrain.pipeline import PipelineKeys, augment_nodes, check_deform_on_device

BLUR = {"type": "blur", "sigma_min": 4.0, "sigma_max": 12.0, "section_probability": 0.3}
MOTION = {"type": "blur", "mode": "motion", "length_min": 8.0, "length_max": 40.0}
CONTRAST = {"type": "contrast", "factor_min": 0.6, "factor_max": 1.4, "centre": "sample"}
CLAHE = {"type": "contrast", "mode": "clahe", "kernel_size": 64.0, "p": 0.5}
CUTOUT = {"type": "cutout", "size_min": 16.0, "size_max": [80.0, 64.0, 64.0], "fill": "noise"}
CUTOUT_3D = {"type": "cutout", "size_min": 24.0, "size_max": 48.0, "per_section": False}
ELASTIC = {"type": "elastic", "control_point_spacing": [40] * 3, "jitter_sigma": [4] * 3}
GOOD = [BLUR, MOTION, CONTRAST, CLAHE, CUTOUT, CUTOUT_3D]

BAD = [
    ({"type": "blur"}, "sigma_min"),
    ({"type": "blur", "sigma_min": 1.0}, "sigma_max"),
    ({"type": "blur", "mode": "motion", "length_min": 1.0}, "length_max"),
    ({"type": "blur", "sigma_min": 3.0, "sigma_max": 2.0}, "sigma_min"),
    ({"type": "blur", "sigma_min": -1.0, "sigma_max": 2.0}, "sigma_min"),
    ({**BLUR, "mode": "zoom"}, "mode"),
    ({**BLUR, "axis": 3}, "axis"),
    ({**BLUR, "section_probability": 1.5}, "section_probability"),
    ({**BLUR, "length_min": 2.0}, "length_min"),
    ({**MOTION, "sigma_max": 2.0}, "sigma_max"),
    ({"type": "contrast", "factor_min": -0.5}, "factor_min"),
    ({"type": "contrast", "factor_min": 2.0, "factor_max": 1.0}, "factor_min"),
    ({"type": "contrast", "gamma_min": 0.0}, "gamma_min"),
    ({"type": "contrast", "gamma_min": 2.0, "gamma_max": 1.0}, "gamma_min"),
    ({"type": "contrast", "centre": "volume"}, "centre"),
    ({"type": "contrast", "kernel_size": 32.0}, "kernel_size"),
    ({**CLAHE, "clip_limit_max": 2.0}, "clip_limit_max"),
    ({**CLAHE, "clip_limit_min": 0.5, "clip_limit_max": 0.1}, "clip_limit_min"),
    ({**CLAHE, "kernel_size": [8.0, 8.0]}, "kernel_size"),
    ({**CLAHE, "kernel_size": 0.0}, "kernel_size"),
    ({**CLAHE, "nbins": 1}, "nbins"),
    ({**CLAHE, "gamma_max": 2.0}, "gamma_max"),
    ({"type": "cutout", "size_max": 8.0}, "size_min"),
    ({**CUTOUT, "size_min": 0.0}, "size_min"),
    ({**CUTOUT, "size_min": 100.0}, "size_min"),
    ({**CUTOUT, "count_min": -1}, "count_min"),
    ({**CUTOUT, "count_min": 4, "count_max": 2}, "count_min"),
    ({**CUTOUT, "shape": "star"}, "shape"),
    ({**CUTOUT, "fill": "one"}, "fill"),
    ({**CUTOUT, "p": 1.5}, "p"),
]
IDS = [f"{d['type']}-{key}" for d, key in BAD]


@pytest.mark.parametrize(("data", "key"), BAD, ids=IDS)
def test_bad_values_are_rejected_naming_the_key(data, key):
    with pytest.raises(pydantic.ValidationError) as error:
        parse_augments([GOOD[0], data])
    assert error.value.errors()[0]["loc"][:2] == (1, key)


@pytest.mark.parametrize(("data", "key"), BAD[:4] + BAD[-6:], ids=IDS[:4] + IDS[-6:])
def test_bad_values_in_a_config_file_are_one_line_naming_the_key(data, key, volume, write_config):
    path = write_config(experiment_dict(volume, augments=[BLUR, data]))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "\n" not in message and f"trainer.augments[1].{key}" in message


@pytest.mark.parametrize("data", GOOD, ids=lambda d: d.get("mode", d["type"]))
def test_yaml_round_trip_gives_the_same_config(data):
    config = parse_augment(data)
    reloaded = parse_augment(yaml.safe_load(yaml.safe_dump(config.model_dump())))
    assert reloaded == config and type(reloaded) is type(config)


def test_each_config_emits_its_node():
    keys = PipelineKeys()
    nodes = [parse_augment(d).node(keys.raw, keys.gt, keys.mask) for d in GOOD]
    assert [type(n) for n in nodes] == [
        BlurAugment,
        BlurAugment,
        ContrastAugment,
        ClaheAugment,
        CutoutAugment,
        CutoutAugment,
    ]
    assert all(n.raw_key == keys.raw for n in nodes)


def test_filters_run_after_the_fused_pass_wherever_they_are_listed():
    keys = PipelineKeys()
    simple = {"type": "simple"}
    first = augment_nodes(parse_augments([BLUR, ELASTIC, simple]), keys)
    assert [type(n) for n in first] == [gp.Normalize, BlurAugment, FusedAugment]
    between = augment_nodes(parse_augments([ELASTIC, CUTOUT, simple, CONTRAST]), keys)
    kinds = [FusedAugment, CutoutAugment, MirrorTransposeAugment, ContrastAugment]
    assert [type(n) for n in between] == kinds
    last = augment_nodes(parse_augments([ELASTIC, simple, CLAHE]), keys)
    assert [type(n) for n in last] == [FusedAugment, ClaheAugment]
    assert last[0].mirror is not None  # the filter after them leaves the run fused


@pytest.mark.parametrize("data", GOOD, ids=lambda d: d.get("mode", d["type"]))
def test_deform_on_device_refuses_the_filters_with_its_error(data, volume):
    with pytest.raises(ConfigError, match="deform_on_device needs trainer.augments"):
        check_deform_on_device(parse_augments([ELASTIC, data]), fuse=True)
    raw = experiment_dict(volume, augments=[ELASTIC, data], deform_on_device=True)
    with pytest.raises(ConfigError, match="deform_on_device"):
        parse_config(raw)


def _pipeline(volume, augments):
    config = parse_config(experiment_dict(volume, augments=augments))
    trainer = config.trainer.build()
    model = build_model(config.model, 1, config.task.build().num_channels)
    trainer.build_batch_provider(config.data.train, model, config.task)
    return trainer.pipeline


@pytest.mark.parametrize("place", [0, 1, 2])
@pytest.mark.parametrize("data", [BLUR, CLAHE, CUTOUT], ids=lambda d: d.get("mode", d["type"]))
def test_training_samples_keep_labels_and_change_raw_wherever_the_filter_is(volume, data, place):
    # the same graph with the filter off (p 0) draws the same samples: gunpowder derives
    # each node's seed from its place in the graph
    augments = [ELASTIC, {"type": "simple"}]
    on = _pipeline(volume, augments[:place] + [{**data, "p": 1.0}] + augments[place:])
    off = _pipeline(volume, augments[:place] + [{**data, "p": 0.0}] + augments[place:])
    changed = []
    for seed in range(2):
        sample, plain = on.request_sample(seed), off.request_sample(seed)
        for key in ("gt", "mask", "target", "weight"):
            np.testing.assert_array_equal(sample[key], plain[key])
        assert sample["raw"].shape == plain["raw"].shape == (1, 36, 36, 36)
        assert np.isfinite(sample["raw"]).all()
        changed.append(not np.array_equal(sample["raw"], plain["raw"]))
    assert any(changed)


def test_a_short_training_run_with_all_three_trains(volume, write_config, tmp_path):
    augments = [ELASTIC, {"type": "simple"}, {**BLUR, "p": 0.8}, MOTION, CONTRAST, CLAHE, CUTOUT]
    config = write_config(experiment_dict(volume, augments=augments, max_steps=2, batch_size=1))
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in rows)
