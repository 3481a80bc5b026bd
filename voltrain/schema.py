"""The JSON schema of the experiment YAML (``voltrain schema``), for editors and checkers.

It is generated from the pydantic models, so it cannot drift from what ``load_config``
accepts, with two additions pydantic cannot make on its own:

- ``trainer.augments``, ``task`` and ``model`` list every type registered now (built-ins,
  classes registered with the decorators and the entry points of installed plugins),
  chosen by ``type``; the pydantic model itself only knows their base classes. A model
  section may leave ``type`` out for the U-Net, as ``load_config`` allows.
- Each member of a tagged union requires its ``type`` key, except the gunpowder trainer,
  which ``load_config`` assumes when ``trainer.type`` is left out. A schema validator
  ignores pydantic's ``discriminator`` keyword, so without this an entry could match two
  members of a ``oneOf`` and be rejected.
"""

from __future__ import annotations

from typing import Any

from voltrain.augments.base import AUGMENTS
from voltrain.experiment import ExperimentConfig
from voltrain.models import MODELS
from voltrain.registry import Registry
from voltrain.tasks import TASKS

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
DEFAULT_TAGS = {"GunpowderTrainerConfig"}
"""Union members whose ``type`` may be left out (see ``ExperimentConfig``)."""


def experiment_schema() -> dict[str, Any]:
    """The JSON schema of an experiment YAML, with every registered augment, task and
    model."""
    schema = ExperimentConfig.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.setdefault("$defs", {})
    _require_union_tags(schema, definitions)
    augments_union = _registered_union(AUGMENTS, definitions)
    # every trainer with augments (gunpowder, semi_supervised)
    for definition in list(definitions.values()):
        augments = definition.get("properties", {}).get("augments")
        if augments is not None and "AugmentConfig" in str(augments.get("items")):
            augments["items"] = augments_union
    properties = schema["properties"]
    properties["task"] = _registered_union(TASKS, definitions)
    model_default = properties["model"].get("default")
    properties["model"] = _registered_union(MODELS, definitions)
    if model_default is not None:
        properties["model"]["default"] = model_default
    for base in ("AugmentConfig", "TaskConfig", "ModelConfig"):
        definitions.pop(base, None)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "voltrain experiment",
        "description": "An experiment YAML for `voltrain train` (data, model, task, trainer).",
        **{key: value for key, value in schema.items() if key != "title"},
    }


def _registered_union(registry: Registry, definitions: dict[str, Any]) -> dict[str, Any]:
    """A ``oneOf`` of every type in ``registry`` chosen by ``type``; each type's schema goes
    into ``definitions`` as ``<kind>_<name>``, requiring ``type`` unless it is the default."""
    refs = {}
    for name, cls in sorted(registry.known().items()):
        own = cls.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
        definitions.update(own.pop("$defs", {}))
        own["properties"]["type"] = {"const": name, "default": name, "title": "Type"}
        required = set(own.get("required", [])) - {"type"}
        own["required"] = sorted(required if name == registry.default else required | {"type"})
        key = f"{registry.kind}_{name}"
        definitions[key] = own
        refs[name] = f"#/$defs/{key}"
    return {
        "oneOf": [{"$ref": ref} for ref in refs.values()],
        "discriminator": {"propertyName": "type", "mapping": refs},
    }


def _require_union_tags(node: Any, definitions: dict[str, Any]) -> None:
    """Make every tagged-union member require its tag, wherever a union appears."""
    if isinstance(node, list):
        for item in node:
            _require_union_tags(item, definitions)
        return
    if not isinstance(node, dict):
        return
    tag = node.get("discriminator", {}).get("propertyName")
    if tag and "oneOf" in node:
        for member in node["oneOf"]:
            name = member.get("$ref", "").rsplit("/", 1)[-1]
            if name in definitions and name not in DEFAULT_TAGS:
                required = definitions[name].setdefault("required", [])
                if tag not in required:
                    required.append(tag)
    for key, value in node.items():
        if key != "discriminator":
            _require_union_tags(value, definitions)
