"""``voltrain schema``: the JSON schema accepts every shipped config, rejects what
``load_config`` rejects, and knows every registered augment, plugins included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import Field

from voltrain.augments import AugmentConfig
from voltrain.augments import base as augment_base
from voltrain.cli import main
from voltrain.schema import experiment_schema

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(ROOT.glob("configs/*.yaml")) + [ROOT / "voltrain" / "demo.yaml"]


class BlurConfig(AugmentConfig):
    """A plugin's augment, registered only for these tests."""

    type: Literal["blur"] = "blur"
    sigma: float = Field(1.0, gt=0)


@pytest.fixture
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = experiment_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_is_valid_against_the_schema(path, validator):
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


def _demo() -> dict:
    return yaml.safe_load((ROOT / "voltrain" / "demo.yaml").read_text())


@pytest.mark.parametrize(
    "mistake",
    [
        lambda c: c["trainer"].update(batch_size=0),
        lambda c: c["trainer"]["augments"].append({"type": "warp9000"}),
        lambda c: c["trainer"]["augments"][0].update(jitter_sigma="big"),
        lambda c: c["model"].update(bogus=1),
        lambda c: c["task"].pop("type"),
        lambda c: c["data"].update(train=[]),
    ],
)
def test_the_schema_rejects_what_load_config_rejects(mistake, validator):
    config = _demo()
    mistake(config)
    assert not validator.is_valid(config)


def test_the_trainer_type_may_be_left_out_as_in_load_config(validator):
    config = _demo()
    config["trainer"].pop("type")
    assert validator.is_valid(config)


def test_a_plugin_augment_is_in_the_schema(monkeypatch, validator):
    monkeypatch.setitem(augment_base._REGISTRY, "blur", BlurConfig)
    schema = experiment_schema()
    items = schema["$defs"]["GunpowderTrainerConfig"]["properties"]["augments"]["items"]
    assert set(items["discriminator"]["mapping"]) >= {"blur", "elastic", "simple", "noise"}
    blur = schema["$defs"]["augment_blur"]
    assert blur["properties"]["sigma"]["exclusiveMinimum"] == 0
    assert blur["required"] == ["type"]


def test_cli_writes_the_schema(tmp_path, capsys):
    out = tmp_path / "voltrain.schema.json"
    assert main(["schema", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == experiment_schema()
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert printed["title"] == "voltrain experiment"


def test_schema_structure_covers_every_section_and_union_member():
    # runs without a JSON-schema validator too
    schema = experiment_schema()
    definitions = schema["$defs"]
    assert set(schema["required"]) == {"data", "task", "trainer"}
    assert schema["properties"]["data"]["$ref"] == "#/$defs/DataConfig"
    tasks = schema["properties"]["task"]["discriminator"]["mapping"]
    trainers = schema["properties"]["trainer"]["discriminator"]["mapping"]
    assert set(tasks) == {
        "affinities",
        "binary",
        "distances",
        "multiclass",
        "lsd",
        "affinities+lsd",
    }
    assert set(trainers) == {"gunpowder", "semi_supervised", "dummy"}
    for ref in tasks.values():
        assert "type" in definitions[ref.rsplit("/", 1)[1]]["required"]
    assert "type" not in definitions["GunpowderTrainerConfig"].get("required", [])
    for path in SHIPPED:
        for augment in yaml.safe_load(path.read_text())["trainer"]["augments"]:
            assert f"augment_{augment['type']}" in definitions


def test_registered_tasks_and_models_are_in_the_schema_and_the_unet_needs_no_type(validator):
    from voltrain.models import MODELS, ModelConfig
    from voltrain.tasks import TASKS, BinaryTaskConfig

    class ConvStackConfig(ModelConfig):
        type: Literal["conv_stack"] = "conv_stack"
        crop: int = Field(2, gt=0)

    class FocalConfig(BinaryTaskConfig):
        type: Literal["focal"] = "focal"

    with MODELS.isolated(), TASKS.isolated():
        MODELS.register("conv_stack")(ConvStackConfig)
        TASKS.register("focal")(FocalConfig)
        schema = experiment_schema()
    models = schema["properties"]["model"]["discriminator"]["mapping"]
    tasks = schema["properties"]["task"]["discriminator"]["mapping"]
    assert set(models) >= {"unet", "conv_stack"} and set(tasks) >= {"binary", "focal"}
    assert schema["$defs"]["model_conv_stack"]["required"] == ["type"]
    assert "type" not in schema["$defs"]["model_unet"].get("required", [])
    assert schema["$defs"]["model_conv_stack"]["properties"]["crop"]["exclusiveMinimum"] == 0
    jsonschema = pytest.importorskip("jsonschema")
    with_plugins = jsonschema.Draft202012Validator(schema)
    config = _demo()
    config["model"] = {"type": "conv_stack", "crop": 3}
    assert with_plugins.is_valid(config) and not validator.is_valid(config)
    config["model"] = {"crop": 3}  # no type: the U-Net, which has no crop
    assert not with_plugins.is_valid(config)
