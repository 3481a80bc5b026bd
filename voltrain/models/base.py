"""What voltrain needs from a network: the model config base class and its registry.

A ``ModelConfig`` is validated data that builds a ``torch.nn.Module`` taking (B, C_in, z,
y, x) raw to (B, C_out, z', y', x') logits, and says which output shape an input shape
gives. Training, validation and prediction use nothing else, so any registered model works
with them. A model joins the ``model.type`` names with ``@register_model("name")`` or as an
entry point of an installed package in the ``voltrain.models`` group::

    [project.entry-points."voltrain.models"]
    tiny_net = "my_package.models:TinyNetConfig"

A model need only implement ``build``: by default its output shape is found by running the
network on the meta device (no memory, no arithmetic). Valid (unpadded) convolutions keep
blockwise prediction exact; a padded network predicts blocks with seams.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from funlib.geometry import Coordinate

from voltrain.config import StrictModel
from voltrain.errors import ConfigError
from voltrain.registry import Registry

INPUT_SHAPE_KEY = "trainer.input_shape"
DIMS = 3

# The config of each network build_model made, so that code handed only the network (the
# trainers) can ask for its shapes; weak, so a network is not kept alive by it.
_network_configs: weakref.WeakKeyDictionary[torch.nn.Module, ModelConfig] = (
    weakref.WeakKeyDictionary()
)
_probed_shapes: dict[tuple[type, str, tuple[int, ...]], tuple[int, ...]] = {}


class ModelConfig(StrictModel):
    """Validated parameters of a network; subclasses set ``type`` to a ``Literal`` name
    and implement ``build``."""

    type: str
    output_factor_key: ClassVar[str] = "model"
    """The config key that sets ``output_factor``, for messages."""

    def build(self, in_channels: int, out_channels: int) -> torch.nn.Module:
        """The network: (B, in_channels, z, y, x) -> logits (B, out_channels, z', y', x')."""
        raise NotImplementedError(f"model type '{self.type}' does not implement build()")

    def output_shape(self, input_shape: Sequence[int]) -> Coordinate:
        """The (z, y, x) output shape, in output voxels, for an input shape in input voxels.

        Raises ``ConfigError`` naming ``trainer.input_shape`` if the network cannot take it.
        This default runs the network once per shape on the meta device.
        """
        shape = _checked_shape(input_shape)
        key = (type(self), self.model_dump_json(), shape)
        if key not in _probed_shapes:
            try:
                output = probe(self, 1, 1, shape)
            except ConfigError:
                raise
            except Exception as error:  # a forward pass can fail in any way on a bad shape
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise ConfigError(
                    f"{INPUT_SHAPE_KEY}: {list(shape)} does not fit model '{self.type}': {reason}"
                ) from None
            _probed_shapes[key] = tuple(output[2:])
        return Coordinate(_probed_shapes[key])

    def valid_input_shape(self, approx_shape: Sequence[int]) -> Coordinate:
        """The smallest input shape >= ``approx_shape`` the network takes.

        This default only accepts ``approx_shape`` itself (raising ``ConfigError`` if the
        network cannot take it); a model whose valid shapes are known overrides it.
        """
        self.output_shape(approx_shape)
        return Coordinate(approx_shape)

    @property
    def output_factor(self) -> Coordinate:
        """Output voxel size over input voxel size, per axis (1: the same voxels)."""
        return Coordinate((1,) * DIMS)

    def output_voxel_size(self, input_voxel_size: Sequence[int]) -> Coordinate:
        """The voxel size of the network's output for input of ``input_voxel_size``."""
        return Coordinate(input_voxel_size) * self.output_factor

    def context(
        self,
        input_shape: Sequence[int],
        output_shape: Sequence[int],
        input_voxel_size: Sequence[int],
    ) -> Coordinate:
        """World units the input reaches beyond the output on each side (centred blocks)."""
        input_size = Coordinate(input_shape) * Coordinate(input_voxel_size)
        output_size = Coordinate(output_shape) * self.output_voxel_size(input_voxel_size)
        return (input_size - output_size) / 2


MODELS: Registry[ModelConfig] = Registry("model", ModelConfig, "voltrain.models", default="unet")
"""The model types by name (``unet`` when ``model.type`` is left out)."""


def register_model(name: str) -> Callable[[type[ModelConfig]], type[ModelConfig]]:
    """Class decorator registering a ``ModelConfig`` subclass under ``model.type: name``."""
    return MODELS.register(name)


def registered_models() -> dict[str, type[ModelConfig]]:
    """All model types known now: built-ins, decorated classes and entry points."""
    return MODELS.known()


def parse_model(data: Any, where: str = "model") -> ModelConfig:
    """Validate a model section, choosing its class by ``type`` (default ``unet``)."""
    return MODELS.parse(data, where)


def probe(
    config: ModelConfig, in_channels: int, out_channels: int, input_shape: Sequence[int]
) -> tuple[int, ...]:
    """The (B, C, z, y, x) shape the network of ``config`` outputs for one sample of
    ``input_shape``, found on the meta device (nothing is allocated or computed)."""
    with torch.device("meta"):
        network = _built(config, in_channels, out_channels)
        output = network(torch.empty(1, in_channels, *input_shape))
    if not isinstance(output, torch.Tensor):
        raise ConfigError(
            f"model: type '{config.type}' returns {type(output).__name__} from forward(), "
            "not a tensor of logits"
        )
    return tuple(output.shape)


def build_model(
    config: ModelConfig,
    in_channels: int,
    out_channels: int,
    input_shape: Sequence[int] | None = None,
) -> torch.nn.Module:
    """Build the network of ``config``; with ``input_shape``, first check on the meta
    device that it outputs ``out_channels`` channels of ``config.output_shape(input_shape)``.

    Raises ``ConfigError`` naming ``model`` when the network and its config disagree, which
    would otherwise surface as a shape mismatch in the loss or a misplaced block.
    """
    if input_shape is not None:
        check_model(config, in_channels, out_channels, input_shape)
    network = _built(config, in_channels, out_channels)
    _network_configs[network] = config
    return network


def network_config(network: torch.nn.Module) -> ModelConfig:
    """The config ``build_model`` built ``network`` from (its shapes and voxel sizes)."""
    config = _network_configs.get(network)
    if config is None:
        raise ValueError(
            f"{type(network).__name__} was not built by voltrain.models.build_model, so its "
            "config (output shapes) is unknown"
        )
    return config


def check_model(
    config: ModelConfig, in_channels: int, out_channels: int, input_shape: Sequence[int]
) -> None:
    """Check that the network outputs what voltrain will crop targets and blocks to."""
    shape = _checked_shape(input_shape)
    expected = (out_channels, *config.output_shape(shape))
    try:
        actual = probe(config, in_channels, out_channels, shape)[1:]
    except ConfigError:
        raise
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"model: type '{config.type}' fails on input {list(shape)} with {in_channels} "
            f"channel(s): {reason}"
        ) from None
    if actual != expected:
        raise ConfigError(
            f"model: type '{config.type}' outputs (channels, z, y, x) = {list(actual)} for "
            f"{INPUT_SHAPE_KEY} {list(shape)}, but voltrain expects {list(expected)} (the "
            "task's channels and the config's output_shape())"
        )


def _built(config: ModelConfig, in_channels: int, out_channels: int) -> torch.nn.Module:
    network = config.build(in_channels, out_channels)
    if not isinstance(network, torch.nn.Module):
        raise ConfigError(
            f"model: type '{config.type}' build() returned {type(network).__name__}, "
            "not a torch.nn.Module"
        )
    return network


def _checked_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != DIMS:
        raise ConfigError(f"{INPUT_SHAPE_KEY}: expected {DIMS} sizes (z, y, x), got {list(shape)}")
    return shape
