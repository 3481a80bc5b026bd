"""Experiment YAML: validation errors name the file and the key."""

from __future__ import annotations

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
