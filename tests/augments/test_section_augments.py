"""The ``defect`` and ``misalign`` configs: their errors, their place in the training graph,
and training with them."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from tests.helpers import experiment_dict
from voltrain.augments import parse_augment, parse_augments
from voltrain.errors import ConfigError, DataError
from voltrain.experiment import load_config, parse_config
from voltrain.models.unet import build_model
from voltrain.nodes.misalign_augment import MisalignAugment
from voltrain.nodes.section_defect_augment import SectionDefectAugment
from voltrain.pipeline import PipelineKeys, augment_nodes
from voltrain.run import train

ELASTIC = {"type": "elastic", "control_point_spacing": [40] * 3, "jitter_sigma": [4] * 3}
SIMPLE = {"type": "simple"}
NOISE = {"type": "noise", "var": 0.001}
DEFECT = {"type": "defect", "prob_missing": 0.1, "prob_low_contrast": 0.1, "fill": "mean"}
MISALIGN = {"type": "misalign", "mode": "shift", "max_displacement": 24}


def test_configs_build_their_nodes():
    keys = PipelineKeys()
    defect = parse_augment({**DEFECT, "axis": 1, "p": 0.5}).node(keys.raw, keys.gt, keys.mask)
    assert isinstance(defect, SectionDefectAugment)
    assert (defect.raw_key, defect.axis, defect.p, defect.fill) == (keys.raw, 1, 0.5, "mean")
    misalign = parse_augment(MISALIGN).node(keys.raw, keys.gt, keys.mask)
    assert isinstance(misalign, MisalignAugment)
    assert misalign.keys == [keys.raw, keys.gt, keys.mask]
    assert (misalign.mode, misalign.max_displacement, misalign.axis) == ("shift", 24.0, 0)


@pytest.mark.parametrize(
    "entry, key",
    [
        ({**DEFECT, "prob_missing": 1.5}, "prob_missing"),
        ({**DEFECT, "prob_missing": 0.6, "prob_low_contrast": 0.6}, "prob_missing"),
        ({**DEFECT, "contrast_min": 0.5, "contrast_max": 0.2}, "contrast_max"),
        ({**DEFECT, "contrast_min": -0.1}, "contrast_min"),
        ({**DEFECT, "fill": "noise"}, "fill"),
        ({**DEFECT, "prob_artifact": 0.1}, "prob_artifact"),
        ({**DEFECT, "axis": 3}, "axis"),
        ({**MISALIGN, "mode": "fold"}, "mode"),
        ({**MISALIGN, "max_displacement": -8}, "max_displacement"),
        ({**MISALIGN, "axis": -1}, "axis"),
        ({"type": "misalign"}, "max_displacement"),
    ],
)
def test_bad_values_are_reported_against_their_key(entry, key):
    with pytest.raises(ValidationError) as error:
        parse_augments([SIMPLE, entry])
    assert [problem["loc"][:2] for problem in error.value.errors()] == [(1, key)]


def test_a_bad_value_in_a_config_file_is_one_line_naming_the_key(volume, write_config):
    raw = experiment_dict(volume, augments=[ELASTIC, {**DEFECT, "prob_low_contrast": 2}])
    with pytest.raises(ConfigError) as error:
        load_config(write_config(raw))
    message = str(error.value)
    assert "trainer.augments[1].prob_low_contrast" in message
    assert "\n" not in message


def _node_types(augments, fuse=True):
    configs = [parse_augment(a) for a in augments]
    return [type(node).__name__ for node in augment_nodes(configs, PipelineKeys(), fuse)]


def test_they_run_anywhere_in_the_list_on_normalised_raw():
    assert _node_types([ELASTIC, SIMPLE, NOISE, MISALIGN, DEFECT]) == [
        "FusedAugment",
        "MisalignAugment",
        "SectionDefectAugment",
    ]
    # before the elastic augment: raw is normalised first, the fused pass then does not
    assert _node_types([DEFECT, MISALIGN, ELASTIC]) == [
        "Normalize",
        "SectionDefectAugment",
        "MisalignAugment",
        "FusedAugment",
    ]
    assert not augment_nodes(
        [parse_augment(a) for a in (DEFECT, MISALIGN, ELASTIC)], PipelineKeys()
    )[3].normalize
    assert _node_types([MISALIGN]) == ["Normalize", "MisalignAugment"]
    assert _node_types([DEFECT]) == ["Normalize", "SectionDefectAugment"]
    # between elastic and noise: the fused pass stops before it, noise runs on its own
    assert _node_types([ELASTIC, MISALIGN, NOISE]) == [
        "FusedAugment",
        "MisalignAugment",
        "NoiseAugment",
    ]


def _trainer(container, **trainer):
    config = parse_config(experiment_dict(container, **trainer))
    model = build_model(config.model, 1, config.task.build().num_channels)
    runtime = config.trainer.build()
    runtime.build_batch_provider(config.data.train, model, config.task)
    return runtime


@pytest.mark.parametrize("augments", [[ELASTIC, DEFECT], [ELASTIC, MISALIGN], [DEFECT, ELASTIC]])
def test_deform_on_device_refuses_them_with_its_error(volume, augments):
    trainer = _trainer(volume, augments=augments)
    pipeline = dataclasses.replace(trainer.pipeline, deform_on_device=True)
    with pytest.raises(ConfigError, match="deform_on_device needs trainer.augments"):
        pipeline.build()


def test_samples_meet_min_masked_and_show_the_defects(volume):
    shift = {**MISALIGN, "max_displacement": 64}
    missing = {"type": "defect", "prob_missing": 0.3, "prob_low_contrast": 0}
    trainer = _trainer(volume, min_masked=0.5, augments=[ELASTIC, SIMPLE, shift, missing])
    saw_missing = False
    for seed in range(6):
        sample = trainer.pipeline.request_sample(seed)
        assert sample["mask"].mean() >= 0.5
        raw = sample["raw"][0]
        saw_missing |= bool(np.any(np.all(raw == 0, axis=(1, 2))))
    assert saw_missing


def test_training_with_both_runs_and_logs_finite_losses(volume, tmp_path, write_config):
    raw = experiment_dict(volume, augments=[ELASTIC, SIMPLE, MISALIGN, DEFECT], max_steps=3)
    config = load_config(write_config(raw))
    out = tmp_path / "run"
    train(config, out, device="cpu", progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [1, 2, 3]
    assert all(np.isfinite(row["loss"]) for row in rows)


@pytest.mark.parametrize("entry", [DEFECT, MISALIGN, {**MISALIGN, "mode": "slip", "axis": 2}])
def test_yaml_round_trip_gives_the_same_config(entry):
    config = parse_augment(entry)
    for key, value in entry.items():
        assert getattr(config, key) == value
    reloaded = parse_augment(yaml.safe_load(yaml.safe_dump(config.model_dump())))
    assert reloaded == config and type(reloaded) is type(config)


def test_a_missing_artifact_volume_is_one_error_before_training(volume, tmp_path):
    missing = str(tmp_path / "no_artifacts.zarr" / "raw")
    defect = {"type": "defect", "prob_artifact": 0.2, "artifact_raw": missing}
    defect["artifact_alpha"] = missing
    config = parse_config(experiment_dict(volume, augments=[defect]))
    out = tmp_path / "run"
    with pytest.raises(DataError, match="artifact_raw: .*no_artifacts.zarr") as error:
        train(config, out, device="cpu", progress=False)
    assert "\n" not in str(error.value)
    assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()


def test_relative_artifact_paths_are_read_from_the_config_file_directory(
    volume, tmp_path, monkeypatch
):
    defect = {"type": "defect", "prob_artifact": 0.2, "artifact_raw": "art.zarr/raw"}
    defect["artifact_alpha"] = "art.zarr/alpha"
    config_dir = tmp_path / "experiment"
    config_dir.mkdir()
    path = config_dir / "config.yaml"
    path.write_text(yaml.safe_dump(experiment_dict(volume, augments=[defect])))
    monkeypatch.chdir(tmp_path)
    loaded = load_config(path).trainer.augments[0]
    assert loaded.artifact_raw == str(config_dir / "art.zarr" / "raw")
    assert loaded.artifact_alpha == str(config_dir / "art.zarr" / "alpha")
