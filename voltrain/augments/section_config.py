"""The config keys shared by augments that change raw section by section or in 3D."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from voltrain.augments.base import AugmentConfig


class SectionAugmentConfig(AugmentConfig):
    """An augment config with ``axis``, ``per_section`` and ``section_probability``.

    A subclass whose keys depend on its ``mode`` lists them in ``mode_keys`` (mode ->
    keys read only in that mode); giving a key of another mode a value other than its
    default is an error, not a silent no-op (defaults pass, so a dumped config reloads).
    """

    mode_keys: ClassVar[dict[str, frozenset[str]]] = {}

    axis: int = Field(0, description="spatial axis the sections are orthogonal to (0 = z)")
    per_section: bool = Field(
        True, description="change each section independently; false: the sample in 3D"
    )
    section_probability: float = Field(
        1.0, description="with per_section, probability of changing each section, in [0, 1]"
    )

    def section_arguments(self) -> dict[str, Any]:
        """The node arguments these keys (and ``p``) give, the same for every such node."""
        return {
            "axis": self.axis,
            "per_section": self.per_section,
            "section_probability": self.section_probability,
            "p": self.p,
        }

    @model_validator(mode="after")
    def _keys_fit_mode(self) -> SectionAugmentConfig:
        mode = getattr(self, "mode", None)
        for other, keys in self.mode_keys.items():
            given = keys & self.model_fields_set if other != mode else set()
            fields = type(self).model_fields
            stray = sorted(k for k in given if getattr(self, k) != fields[k].default)
            if stray:
                raise ValueError(f"{stray[0]} is read only with mode '{other}', not '{mode}'")
        return self
