"""The augment config base class and the registry that maps a YAML ``type:`` to it.

A user adds an augment either with the ``@register_augment("name")`` decorator or by
exposing the config class in the ``voltrain.augments`` entry-point group of another
installed package::

    [project.entry-points."voltrain.augments"]
    blur = "my_package.augments:BlurConfig"
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gunpowder as gp
from pydantic import Field, model_validator

from voltrain.config import StrictModel
from voltrain.errors import ConfigError
from voltrain.registry import Registry

# Keys to build a node with when checking a config (see ``AugmentConfig._node_accepts``).
_CHECK_KEYS = (gp.ArrayKey("RAW"), gp.ArrayKey("GT"), gp.ArrayKey("MASK"))

ENTRY_POINT_GROUP = "voltrain.augments"


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


AUGMENTS: Registry[AugmentConfig] = Registry("augment", AugmentConfig, ENTRY_POINT_GROUP)
"""The augment types by name; ``register_augment`` adds to it."""

_REGISTRY = AUGMENTS.classes  # the registered classes (one dict, for tests that add to it)


def register_augment(name: str) -> Callable[[type[AugmentConfig]], type[AugmentConfig]]:
    """Class decorator registering an ``AugmentConfig`` subclass under ``type: name``."""
    return AUGMENTS.register(name)


def registered_augments() -> dict[str, type[AugmentConfig]]:
    """All augment types known now: built-ins, decorated classes and entry points."""
    return AUGMENTS.known()


def parse_augment(data: Any, where: str = "augments") -> AugmentConfig:
    """Validate one augment entry from a config, choosing its class by ``type``.

    Raises ``ConfigError`` naming ``where`` (the config key) for an unknown or missing type.
    Field errors are left to pydantic, which reports them against the same key.
    """
    return AUGMENTS.parse(data, where)


def parse_augments(items: list[Any]) -> list[AugmentConfig]:
    """Validate a list of augment entries, reporting the problems of every entry at once.

    Raises a pydantic ``ValidationError`` whose locations start with the entry's index, so
    that a config error reads ``trainer.augments[1].jitter_sigma`` rather than losing the
    index; an unknown or missing ``type`` is reported at the entry itself.
    """
    return AUGMENTS.validate_list(items)
