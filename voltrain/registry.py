"""Registries that map a config section's ``type:`` to the config class that reads it.

Augments, tasks and models are chosen by name in the experiment YAML. Each kind has one
``Registry``: built-ins and user classes join it with its ``register(name)`` decorator, and
installed packages join it through an entry-point group, loaded the first time the
registry is asked what it knows::

    [project.entry-points."voltrain.models"]
    tiny_net = "my_package.models:TinyNetConfig"

Parsing checks the ``type`` first, so an unknown or missing one is reported against the
config key with the types known now (plugins included), rather than as pydantic's failure
to match any member of a closed union.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from voltrain.errors import ConfigError, PluginError

TYPE_ERROR = "registered_type"
"""pydantic error type of an unknown or missing ``type`` (see ``voltrain.config_errors``)."""


class Registry[C: BaseModel]:
    """Name → config class for one kind of section (augment, task, model).

    Args:
        kind: the section's kind in messages ("augment", "task", "model").
        base: the class every registered config derives from.
        group: the entry-point group whose entries join the registry.
        default: the type assumed when a section leaves ``type`` out (None: required).
    """

    def __init__(self, kind: str, base: type[C], group: str, default: str | None = None):
        self.kind = kind
        self.base = base
        self.group = group
        self.default = default
        self.classes: dict[str, type[C]] = {}
        self.entry_points_loaded = False

    def register(self, name: str) -> Callable[[type[C]], type[C]]:
        """Class decorator registering a config class under ``type: name``.

        Raises ``TypeError`` for a class that is not a ``base`` subclass and ``ValueError``
        when another class holds the name (registering the same class again is fine).
        """

        def decorator(cls: type[C]) -> type[C]:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(
                    f"@register_{self.kind}('{name}') needs a {self.base.__name__} subclass"
                )
            existing = self.classes.get(name)
            if existing is not None and existing is not cls:
                raise ValueError(
                    f"{self.kind} type '{name}' is already registered by "
                    f"{existing.__module__}.{existing.__qualname__}"
                )
            self.classes[name] = cls
            return cls

        return decorator

    def known(self) -> dict[str, type[C]]:
        """Every type known now: built-ins, decorated classes and entry points."""
        self._load_entry_points()
        return dict(self.classes)

    def names(self) -> str:
        """The known type names, quoted and sorted, for messages."""
        return ", ".join(f"'{name}'" for name in sorted(self.known()))

    @contextmanager
    def isolated(self) -> Iterator[Registry[C]]:
        """Within the block, registrations (and entry points loaded) are undone after it:
        for tests that register classes of their own."""
        classes, loaded = dict(self.classes), self.entry_points_loaded
        try:
            yield self
        finally:
            self.classes.clear()
            self.classes.update(classes)
            self.entry_points_loaded = loaded

    def _load_entry_points(self) -> None:
        if self.entry_points_loaded:
            return
        self.entry_points_loaded = True
        for entry_point in entry_points(group=self.group):
            cls = _load(entry_point, self.group)
            try:
                self.register(entry_point.name)(cls)
            except (TypeError, ValueError) as error:
                raise PluginError(f"{_describe(entry_point, self.group)}: {error}") from None

    def class_for(self, data: Any) -> type[C] | None:
        """The class ``data``'s ``type`` selects (or the default type's), None if none."""
        if not isinstance(data, dict):
            return None
        return self.known().get(data.get("type", self.default))

    def parse(self, data: Any, where: str) -> C:
        """Validate one section, choosing its class by ``type``.

        Raises ``ConfigError`` naming ``where`` (the config key) for an unknown or missing
        type; field errors are left to pydantic, which reports them against the same key.
        """
        if isinstance(data, self.base):
            return data
        cls = self.class_for(data)
        if cls is None:
            message = self._type_problem(data, self.kind)["type"].message()
            raise ConfigError(f"{where}: {message}")
        return cls.model_validate(data)

    def validate(self, data: Any) -> C:
        """``parse`` for a pydantic field validator: an unknown or missing type is a
        ``ValidationError`` located at the section's ``type``."""
        if isinstance(data, self.base):
            return data
        cls = self.class_for(data)
        if cls is None:
            raise ValidationError.from_exception_data(self.kind, [self._type_problem(data)])
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            problems = [{**e, "loc": _located(cls, e)} for e in error.errors()]
            raise ValidationError.from_exception_data(self.kind, problems) from None

    def validate_list(self, items: list[Any]) -> list[C]:
        """Validate a list of sections, reporting the problems of every entry at once.

        The errors' locations start with the entry's index, so that a config error reads
        ``trainer.augments[1].jitter_sigma``; an unknown or missing ``type`` is reported at
        the entry itself.
        """
        parsed: list[C] = []
        problems: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            if isinstance(item, self.base):
                parsed.append(item)
                continue
            cls = self.class_for(item)
            if cls is None:
                problems.append({**self._type_problem(item, self.kind), "loc": (index,)})
                continue
            try:
                parsed.append(cls.model_validate(item))
            except ValidationError as error:
                problems += [{**e, "loc": (index, *_located(cls, e))} for e in error.errors()]
        if problems:
            raise ValidationError.from_exception_data(f"{self.kind}s", problems)
        return parsed

    def _type_problem(self, data: Any, kind: str = "") -> dict[str, Any]:
        """The error entry, located at the section, for a section whose ``type`` selects no
        registered class; ``kind`` names the kind in the message where the key does not."""
        if not isinstance(data, dict):
            message = "expected a mapping with a 'type' key (known types: {names})"
        elif "type" not in data:
            message = "missing 'type' (known types: {names})"
        else:
            message = "unknown {kind}type '{type}' (known types: {names})"
        context = {
            "names": self.names(),
            "kind": f"{kind} " if kind else "",
            "type": str(data.get("type")) if isinstance(data, dict) else "",
        }
        return {
            "type": PydanticCustomError(TYPE_ERROR, message, context),
            "loc": (),
            "input": data,
        }


def _load(entry_point: EntryPoint, group: str) -> type:
    """The object an entry point names; any failure to import it is a ``PluginError``."""
    try:
        return entry_point.load()
    except Exception as error:  # a plugin's import can fail in any way; name the plugin
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        raise PluginError(f"{_describe(entry_point, group)} failed to load: {reason}") from None


def _describe(entry_point: EntryPoint, group: str) -> str:
    dist = entry_point.dist
    source = f" of {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point '{entry_point.name} = {entry_point.value}' (group {group}{source})"


def _located(cls: type[BaseModel], error: dict[str, Any]) -> tuple:
    """An error's location in the section; an error a whole-config validator raises (such
    as a node constructor's) is placed at the field its message starts with."""
    if error["loc"]:
        return tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    first = str(cause if cause is not None else error["msg"]).split(" ", 1)[0]
    return (first,) if first in cls.model_fields else ()
