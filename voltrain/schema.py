"""The JSON schema of the experiment YAML (``voltrain schema``), for editors and checkers.

It is generated from the pydantic models, so it cannot drift from what ``load_config``
accepts, with two additions pydantic cannot make on its own:

- ``trainer.augments`` lists every augment registered now (built-ins, ``@register_augment``
  classes and the ``voltrain.augments`` entry points of installed plugins), chosen by
  ``type``; the model itself only knows the ``AugmentConfig`` base class.
- Each member of a tagged union requires its ``type`` key, except the gunpowder trainer,
  which ``load_config`` assumes when ``trainer.type`` is left out. A schema validator
  ignores pydantic's ``discriminator`` keyword, so without this an entry could match two
  members of a ``oneOf`` and be rejected.
"""

from __future__ import annotations

from typing import Any

from voltrain.augments import registered_augments
from voltrain.experiment import ExperimentConfig

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
DEFAULT_TAGS = {"GunpowderTrainerConfig"}
"""Union members whose ``type`` may be left out (see ``ExperimentConfig``)."""


def experiment_schema() -> dict[str, Any]:
    """The JSON schema of an experiment YAML, with every registered augment."""
    schema = ExperimentConfig.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.setdefault("$defs", {})
    _require_union_tags(schema, definitions)
    augment_refs = _add_augment_definitions(definitions)
    items = {
        "oneOf": list(augment_refs.values()),
        "discriminator": {
            "propertyName": "type",
            "mapping": {name: ref["$ref"] for name, ref in augment_refs.items()},
        },
    }
    # every trainer with augments (gunpowder, semi_supervised)
    for definition in list(definitions.values()):
        augments = definition.get("properties", {}).get("augments")
        if augments is not None and "AugmentConfig" in str(augments.get("items")):
            augments["items"] = items
    definitions.pop("AugmentConfig", None)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "voltrain experiment",
        "description": "An experiment YAML for `voltrain train` (data, model, task, trainer).",
        **{key: value for key, value in schema.items() if key != "title"},
    }


def _add_augment_definitions(definitions: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Put each registered augment's schema into ``definitions``; return name -> $ref."""
    refs = {}
    for name, cls in sorted(registered_augments().items()):
        own = cls.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
        definitions.update(own.pop("$defs", {}))
        own["properties"]["type"] = {"const": name, "default": name, "title": "Type"}
        own["required"] = sorted(set(own.get("required", [])) | {"type"})
        key = f"augment_{name}"
        definitions[key] = own
        refs[name] = {"$ref": f"#/$defs/{key}"}
    return refs


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
