"""Augment configs: validated parameters that emit gunpowder nodes.

Importing this package registers the built-in augments: elastic, simple, intensity, gamma,
intensity_scale_shift, noise, blur, contrast, cutout, defect and misalign.
"""

from voltrain.augments import (  # noqa: F401  (imported to register the built-ins)
    blur,
    contrast,
    cutout,
    defect,
    elastic,
    gamma,
    intensity,
    intensity_scale_shift,
    misalign,
    noise,
    simple,
)
from voltrain.augments.base import (
    AugmentConfig,
    parse_augment,
    parse_augments,
    register_augment,
    registered_augments,
)

__all__ = [
    "AugmentConfig",
    "parse_augment",
    "parse_augments",
    "register_augment",
    "registered_augments",
]
