"""The augment config base class and the registry that maps a YAML ``type:`` to it.

A user adds an augment either with the ``@register_augment("name")`` decorator or by
exposing the config class in the ``voltrain.augments`` entry-point group of another
installed package::

    [project.entry-points."voltrain.augments"]
    blur = "my_package.augments:BlurConfig"
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import gunpowder as gp
from pydantic import Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from voltrain.config import StrictModel
from voltrain.errors import ConfigError

# Keys to build a node with when checking a config (see ``AugmentConfig._node_accepts``).
_CHECK_KEYS = (gp.ArrayKey("RAW"), gp.ArrayKey("GT"), gp.ArrayKey("MASK"))

ENTRY_POINT_GROUP = "voltrain.augments"

_REGISTRY: dict[str, type[AugmentConfig]] = {}
_entry_points_loaded = False


class AugmentConfig(StrictModel):
    """Validated parameters of one augmentation, which emits the gunpowder node doing it.

    Subclasses set ``type`` to a ``Literal`` of their registered name and implement
    ``node``. The emitted node draws its random parameters from the request's seed, so
    the same seed gives the same augmentation.
    """

    type: str
    p: float = Field(1.0, ge=0.0, le=1.0, description="probability of applying the augment")

    def node(
        self, raw_key: gp.ArrayKey, gt_key: gp.ArrayKey, mask_key: gp.ArrayKey
    ) -> gp.BatchFilter:
        """Return the gunpowder node that applies this augment to a batch."""
        raise NotImplementedError(f"augment type '{self.type}' does not implement node()")

    def resolved(self, base_dir: Path) -> AugmentConfig:
        """A copy whose relative paths (if it has any) are made absolute against
        ``base_dir``, the config file's directory; augments without paths return self."""
        return self

    @model_validator(mode="after")
    def _node_accepts(self) -> AugmentConfig:
        # The node's constructor is the one place that checks ranges and orderings (as in
        # torchio); building it here reports them against this config's key.
        if type(self).node is AugmentConfig.node:
            return self
        try:
            self.node(*_CHECK_KEYS)
        except ConfigError as error:
            raise ValueError(str(error)) from None
        return self


def register_augment(name: str) -> Callable[[type[AugmentConfig]], type[AugmentConfig]]:
    """Class decorator registering an ``AugmentConfig`` subclass under ``type: name``."""

    def decorator(cls: type[AugmentConfig]) -> type[AugmentConfig]:
        if not (isinstance(cls, type) and issubclass(cls, AugmentConfig)):
            raise TypeError(f"@register_augment('{name}') needs an AugmentConfig subclass")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"augment type '{name}' is already registered by "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        _REGISTRY[name] = cls
        return cls

    return decorator


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in _REGISTRY:
            continue
        cls = entry_point.load()
        register_augment(entry_point.name)(cls)


def registered_augments() -> dict[str, type[AugmentConfig]]:
    """All augment types known now: built-ins, decorated classes and entry points."""
    _load_entry_points()
    return dict(_REGISTRY)


def parse_augment(data: Any, where: str = "augments") -> AugmentConfig:
    """Validate one augment entry from a config, choosing its class by ``type``.

    Raises ``ConfigError`` naming ``where`` (the config key) for an unknown or missing type.
    Field errors are left to pydantic, which reports them against the same key.
    """
    if isinstance(data, AugmentConfig):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'type' key, got {data!r}")
    type_name = data.get("type")
    known = registered_augments()
    if type_name is None:
        raise ConfigError(f"{where}: missing 'type' (known types: {', '.join(sorted(known))})")
    cls = known.get(type_name)
    if cls is None:
        raise ConfigError(
            f"{where}: unknown augment type '{type_name}' (known types: {', '.join(sorted(known))})"
        )
    return cls.model_validate(data)


def parse_augments(items: list[Any]) -> list[AugmentConfig]:
    """Validate a list of augment entries, reporting the problems of every entry at once.

    Raises a pydantic ``ValidationError`` whose locations start with the entry's index, so
    that a config error reads ``trainer.augments[1].jitter_sigma`` rather than losing the
    index; an unknown or missing ``type`` is reported at the entry itself.
    """
    known = registered_augments()
    names = ", ".join(sorted(known))
    parsed: list[AugmentConfig] = []
    problems: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if isinstance(item, AugmentConfig):
            parsed.append(item)
            continue
        cls = known.get(item.get("type")) if isinstance(item, dict) else None
        if cls is None:
            problems.append(_type_problem(index, item, names))
            continue
        try:
            parsed.append(cls.model_validate(item))
        except ValidationError as error:
            problems += [{**e, "loc": (index, *_located(cls, e))} for e in error.errors()]
    if problems:
        raise ValidationError.from_exception_data("augments", problems)
    return parsed


def _located(cls: type[AugmentConfig], error: dict[str, Any]) -> tuple:
    """An error's location in the augment; a node constructor's error (raised for the whole
    config by ``_node_accepts``) is placed at the argument its message starts with."""
    if error["loc"]:
        return tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    first = str(cause if cause is not None else error["msg"]).split(" ", 1)[0]
    return (first,) if first in cls.model_fields else ()


def _type_problem(index: int, item: Any, names: str) -> dict[str, Any]:
    """The error entry for an augment whose ``type`` selects no registered augment."""
    if not isinstance(item, dict):
        message = "expected a mapping with a 'type' key (known types: {names})"
    elif "type" not in item:
        message = "missing 'type' (known types: {names})"
    else:
        message = "unknown augment type '{type}' (known types: {names})"
    context = {"names": names, "type": str(item.get("type")) if isinstance(item, dict) else ""}
    return {
        "type": PydanticCustomError("augment_type", message, context),
        "loc": (index,),
        "input": item,
    }
