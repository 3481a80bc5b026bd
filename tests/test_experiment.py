"""Experiment YAML: validation errors name the file and the key."""

from __future__ import annotations

import re

import pytest

from tests.helpers import experiment_dict
from voltrain.errors import ConfigError
from voltrain.experiment import load_config


def test_valid_config_resolves_relative_paths(volume, write_config, tmp_path):
    config = experiment_dict(volume)
    config["data"]["train"][0]["raw"] = "relative.zarr/raw"
    path = write_config(config)
    loaded = load_config(path)
    assert loaded.data.train[0].raw == str(tmp_path / "relative.zarr" / "raw")
    assert loaded.trainer.type == "gunpowder"


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("data:\n  train: [\n    raw: x\n  - : :\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: malformed YAML at line \d+"):
        load_config(path)


def test_unknown_augment_type_names_key(volume, write_config):
    config = experiment_dict(
        volume,
        augments=[
            {
                "type": "intensity",
                "scale_min": 0.9,
                "scale_max": 1.1,
                "shift_min": 0,
                "shift_max": 0,
            },
            {"type": "warp9000"},
        ],
    )
    with pytest.raises(
        ConfigError, match=r"trainer.augments\[1\]: unknown augment type 'warp9000'"
    ):
        load_config(write_config(config))


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("trainer", "batch_size", 0, r"trainer.batch_size: .*greater than 0"),
        ("trainer", "input_shape", [36, 0, 36], r"trainer.input_shape: .*positive"),
        ("trainer", "learning_rate", -1.0, r"trainer.learning_rate: .*greater than 0"),
        ("model", "num_fmaps", -2, r"model.num_fmaps"),
        ("trainer", "min_masked", 1.5, r"trainer.min_masked"),
        ("trainer", "bogus_key", 1, r"trainer.bogus_key: unknown key"),
    ],
)
def test_bad_values_name_their_key(volume, write_config, section, key, value, expected):
    config = experiment_dict(volume)
    config[section][key] = value
    with pytest.raises(ConfigError, match=r"experiment.yaml: " + expected):
        load_config(write_config(config))


def test_input_shape_that_does_not_fit_the_model(volume, write_config):
    config = experiment_dict(volume, input_shape=[35, 36, 36])
    with pytest.raises(ConfigError, match=r"trainer.input_shape"):
        load_config(write_config(config))


def test_every_mistake_is_reported_at_once_with_its_full_key(volume, write_config):
    elastic = {"type": "elastic", "control_point_spacing": [8, 8, 8], "jitter_sigma": [1, -2, 2]}
    config = experiment_dict(volume, batch_size=0, augments=[{"type": "simple"}, elastic])
    config["model"]["num_fmaps"] = "many"
    config["task"]["type"] = "boundaries"
    config["data"]["train"][0]["weight"] = -1
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(config))
    headline, *problems = str(caught.value).splitlines()
    assert headline == f"{write_config(config)}: 5 problems:"
    expected = [
        r"data\.train\[0\]\.weight: expected greater than 0, got -1$",
        r"model\.num_fmaps: expected a valid integer.*, got 'many'$",
        r"task: unknown type 'boundaries' \(known types: .*'affinities'.*'binary'.*\)$",
        r"trainer\.batch_size: expected greater than 0, got 0$",
        r"trainer\.augments\[1\]\.jitter_sigma: .*>= 0, got \[1\.0, -2\.0, 2\.0\]$",
    ]
    assert len(problems) == len(expected)
    for pattern, line in zip(expected, problems, strict=True):
        assert re.search(pattern, line.strip()), line
    for line in problems:
        assert "Value error" not in line and line.count("got ") <= 1, line


def test_a_validator_message_shows_the_value_once(volume, write_config):
    config = experiment_dict(volume, input_shape=[36, 0, 36])
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(config))
    message = str(caught.value)
    assert message.count("[36, 0, 36]") == 1 and "Value error" not in message
    assert len(message.splitlines()) == 1


def test_union_tags_stay_out_of_the_key_even_when_the_type_is_defaulted(volume, write_config):
    config = experiment_dict(volume, optimizer={"type": "sgd", "momentum": 1.5})
    config["trainer"].pop("type")  # the gunpowder trainer is assumed
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(config))
    assert re.search(
        r"experiment.yaml: trainer\.optimizer\.momentum: .*, got 1\.5$", str(caught.value)
    )
