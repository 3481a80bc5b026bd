"""Tasks and models by ``type``: decorated classes train in-process, names are unique, and a
broken plugin or an unknown type is one line naming the entry point or the config key."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Literal

import pytest
import torch
import yaml

from tests.helpers import experiment_dict
from voltrain.cli import main
from voltrain.errors import ConfigError, PluginError
from voltrain.experiment import parse_config
from voltrain.models import MODELS, ModelConfig, register_model
from voltrain.tasks import TASKS, BinaryTask, BinaryTaskConfig, TaskConfig, register_task
from voltrain.tasks.base import weighted_mean


@pytest.fixture
def private_registries():
    """Classes registered (and entry points loaded) by a test vanish after it."""
    with MODELS.isolated(), TASKS.isolated():
        yield


def valid_convs(in_channels: int, out_channels: int, crop: int) -> torch.nn.Sequential:
    """Valid 3^3 convolutions that crop ``crop`` voxels per side in all."""
    layers: list[torch.nn.Module] = []
    for i in range(crop):
        layers += [torch.nn.Conv3d(in_channels if i == 0 else 4, 4, 3), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Conv3d(4, out_channels, 1))


def register_user_classes() -> tuple[type, type]:
    @register_model("conv_stack")
    class ConvStackConfig(ModelConfig):
        type: Literal["conv_stack"] = "conv_stack"
        crop: int = 2

        def build(self, in_channels: int, out_channels: int) -> torch.nn.Module:
            return valid_convs(in_channels, out_channels, self.crop)

    class SquaredErrorTask(BinaryTask):
        def loss(self, logits, target, weight):
            return weighted_mean((torch.sigmoid(logits) - target) ** 2, weight)

    @register_task("squared_binary")
    class SquaredBinaryConfig(BinaryTaskConfig):
        type: Literal["squared_binary"] = "squared_binary"

        def build(self) -> SquaredErrorTask:
            return SquaredErrorTask(self)

    return ConvStackConfig, SquaredBinaryConfig


def user_config(volume: Path, **model) -> dict:
    config = experiment_dict(volume, input_shape=[20, 20, 20], max_steps=2, batch_size=1)
    config["model"] = {"type": "conv_stack", **model}
    config["task"] = {"type": "squared_binary"}
    return config


def test_decorated_model_and_task_train_in_process(private_registries, volume, tmp_path):
    model_cls, task_cls = register_user_classes()
    config = parse_config(user_config(volume, crop=3))
    assert type(config.model) is model_cls and type(config.task) is task_cls
    assert config.model.output_shape((20, 20, 20)) == (14, 14, 14), "found on the meta device"
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(user_config(volume, crop=3)))

    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 0

    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"] == {"type": "conv_stack", "crop": 3}, "the subclass's own fields"
    assert parse_config(saved).model == config.model, "the saved config reads back"
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["iteration"] for row in rows] == [1, 2]
    assert all(math.isfinite(json.loads(row)["loss"]) for row in rows)


def test_a_model_whose_network_disagrees_with_its_output_shape_is_one_line(
    private_registries, volume, tmp_path, capsys
):
    @register_model("conv_stack")
    class MisstatedConfig(ModelConfig):
        type: Literal["conv_stack"] = "conv_stack"

        def build(self, in_channels: int, out_channels: int) -> torch.nn.Module:
            return valid_convs(in_channels, out_channels, 2)

        def output_shape(self, input_shape):  # forgets that each convolution crops
            return tuple(input_shape)

    config = user_config(volume)
    config["task"] = {"type": "binary"}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))

    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2

    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "model: type 'conv_stack' outputs (channels, z, y, x) = [1, 16, 16, 16]" in line
    assert "expects [1, 20, 20, 20]" in line
    assert not (tmp_path / "run").exists()


def test_an_input_the_user_model_cannot_take_names_trainer_input_shape(private_registries, volume):
    register_user_classes()
    config = user_config(volume, crop=2)
    config["trainer"]["input_shape"] = [4, 20, 20]
    with pytest.raises(ConfigError, match=r"trainer.input_shape: \[4, 20, 20\] does not fit"):
        parse_config(config)


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("task", {"type": "boundaries"}, "task: unknown type 'boundaries' (known types: "),
        ("task", {"balance_weights": True}, "task: missing 'type' (known types: "),
        ("model", {"type": "resnet"}, "model: unknown type 'resnet' (known types: "),
    ],
)
def test_an_unknown_type_is_one_line_naming_the_key_and_exit_2(
    section, value, message, volume, write_config, tmp_path, capsys
):
    config = experiment_dict(volume)
    config[section] = value
    assert main(["train", str(write_config(config)), "--out", str(tmp_path / "run")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line
    assert "'binary'" in line if section == "task" else "'unet'" in line
    assert not (tmp_path / "run").exists()


def test_the_model_type_defaults_to_the_unet(volume):
    config = parse_config(experiment_dict(volume))
    assert config.model.type == "unet"
    assert config.model.output_shape((36, 36, 36)) == (20, 20, 20)


def test_two_classes_under_one_name_are_rejected(private_registries):
    class OtherModel(ModelConfig):
        type: Literal["unet"] = "unet"

    class OtherTask(TaskConfig):
        type: Literal["binary"] = "binary"

    with pytest.raises(ValueError, match="model type 'unet' is already registered by .*UNetConfig"):
        register_model("unet")(OtherModel)
    with pytest.raises(ValueError, match="task type 'binary' is already registered by .*Binary"):
        register_task("binary")(OtherTask)
    with pytest.raises(TypeError, match="needs a ModelConfig subclass"):
        register_model("task_as_model")(OtherTask)


def write_distribution(root: Path, group: str, line: str, module_source: str = "") -> None:
    """An installed-looking distribution (dist-info with an entry point) in ``root``."""
    if module_source:
        (root / "voltrain_odd_plugin.py").write_text(module_source)
    dist_info = root / "odd_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: odd-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[{group}]\n{line}\n")


@pytest.mark.parametrize(
    ("group", "line", "source", "message"),
    [
        (
            "voltrain.models",
            "broken = voltrain_missing_plugin.models:Net",
            "",
            "entry point 'broken = voltrain_missing_plugin.models:Net' (group voltrain.models "
            "of odd-plugin 0.1) failed to load: ModuleNotFoundError: No module named "
            "'voltrain_missing_plugin'",
        ),
        (
            "voltrain.tasks",
            "odd = voltrain_odd_plugin:Odd",
            "class Odd:\n    pass\n",
            "entry point 'odd = voltrain_odd_plugin:Odd' (group voltrain.tasks of odd-plugin "
            "0.1): @register_task('odd') needs a TaskConfig subclass",
        ),
        (
            "voltrain.tasks",
            "binary = voltrain_odd_plugin:Binary",
            "from voltrain.tasks import TaskConfig\nclass Binary(TaskConfig):\n    pass\n",
            "(group voltrain.tasks of odd-plugin 0.1): task type 'binary' is already registered",
        ),
    ],
)
def test_a_broken_entry_point_is_one_line_naming_it(
    group, line, source, message, private_registries, volume, write_config, tmp_path, monkeypatch
):
    write_distribution(tmp_path, group, line, source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "voltrain_odd_plugin", raising=False)
    MODELS.entry_points_loaded = TASKS.entry_points_loaded = False
    with pytest.raises(PluginError) as caught:
        parse_config(experiment_dict(volume))
    assert message in str(caught.value) and "\n" not in str(caught.value)
