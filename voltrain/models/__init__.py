"""Networks: the model config base class, its registry and the built-in U-Net.

Importing this package registers the built-in ``unet``; a model of one's own joins with
``@register_model`` or the ``voltrain.models`` entry-point group.
"""

from typing import Annotated

from pydantic import BeforeValidator, SerializeAsAny

from voltrain.models.base import (
    MODELS,
    ModelConfig,
    build_model,
    check_model,
    network_config,
    parse_model,
    register_model,
    registered_models,
)
from voltrain.models.unet import UNet, UNetConfig

ModelConfigs = Annotated[SerializeAsAny[ModelConfig], BeforeValidator(MODELS.validate)]
"""Any registered model config, chosen by its ``type`` key (default ``unet``)."""

__all__ = [
    "MODELS",
    "ModelConfig",
    "ModelConfigs",
    "UNet",
    "UNetConfig",
    "build_model",
    "check_model",
    "network_config",
    "parse_model",
    "register_model",
    "registered_models",
]
