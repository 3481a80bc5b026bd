"""A configurable 3D U-Net with valid convolutions, and the shape arithmetic it implies.

Valid (unpadded) convolutions make every output voxel see its full receptive field, so a
large volume can be predicted block by block with the same result as in one piece. The
price is that only some input shapes work: at every level the feature map must divide by
the downsample factor, and nothing may shrink to zero. ``output_shape`` and
``valid_input_shape`` answer these questions without building the network.

Like funlib's U-Net, each upsampled feature map is cropped so that the output size is a
multiple of the product of all downsample factors: blocks tiled at that stride then see the
same pooling grid, so blockwise prediction matches a single pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from funlib.geometry import Coordinate
from pydantic import Field, field_validator, model_validator

from voltrain.errors import ConfigError
from voltrain.models import base
from voltrain.models.base import DIMS, INPUT_SHAPE_KEY, ModelConfig, register_model

AXIS_NAMES = ("z", "y", "x")


@register_model("unet")
class UNetConfig(ModelConfig):
    """Validated architecture of a 3D U-Net with valid convolutions (``model.type: unet``,
    the default)."""

    type: Literal["unet"] = "unet"
    output_factor_key: ClassVar[str] = "model.output_downsample"
    num_fmaps: int = Field(12, gt=0, description="feature maps at the top level")
    fmap_inc_factor: int = Field(5, gt=0, description="feature map growth per level")
    downsample_factors: list[list[int]] = Field(
        default_factory=lambda: [[2, 2, 2], [2, 2, 2]],
        description="per level, the (z, y, x) max-pooling factors; anisotropic allowed",
    )
    kernel_size: list[int] | int = Field(3, description="odd (z, y, x) convolution size")
    kernel_sizes: list[list[int]] | None = Field(
        None,
        description="per level, top first, the odd (z, y, x) kernel of every convolution of "
        "that level on the down and the up path (e.g. [1, 3, 3] at the top of an "
        "anisotropic net); replaces kernel_size",
    )
    num_convs_per_level: int = Field(2, gt=0)
    upsample: Literal["transposed", "nearest"] = "transposed"
    batch_norm: bool = False
    output_downsample: list[int] = Field(
        default_factory=lambda: [1, 1, 1],
        description="(z, y, x) factors of a strided convolution that ends the U-Net: the "
        "output voxel size is the input's times these (for labels coarser than raw)",
    )

    @field_validator("downsample_factors")
    @classmethod
    def _check_factors(cls, factors: list[list[int]]) -> list[list[int]]:
        for level, factor in enumerate(factors):
            if len(factor) != DIMS or any(f < 1 for f in factor):
                raise ValueError(
                    f"level {level}: expected {DIMS} factors >= 1 (z, y, x), got {factor}"
                )
        return factors

    @field_validator("output_downsample")
    @classmethod
    def _check_output_downsample(cls, factors: list[int]) -> list[int]:
        if len(factors) != DIMS or any(f < 1 for f in factors):
            raise ValueError(f"expected {DIMS} factors >= 1 (z, y, x), got {factors}")
        return factors

    @field_validator("kernel_size")
    @classmethod
    def _check_kernel(cls, kernel: list[int] | int) -> list[int] | int:
        sizes = [kernel] * DIMS if isinstance(kernel, int) else kernel
        if len(sizes) != DIMS:
            raise ValueError(f"expected one size or {DIMS} sizes (z, y, x), got {kernel}")
        # An even kernel shifts the centre by half a voxel, which no crop can realign.
        if any(k < 1 or k % 2 == 0 for k in sizes):
            raise ValueError(f"kernel sizes must be odd and >= 1, got {kernel}")
        return kernel

    @field_validator("kernel_sizes")
    @classmethod
    def _check_kernels(cls, kernels: list[list[int]] | None) -> list[list[int]] | None:
        for level, kernel in enumerate(kernels or []):
            if len(kernel) != DIMS or any(k < 1 or k % 2 == 0 for k in kernel):
                raise ValueError(
                    f"level {level}: expected {DIMS} odd sizes >= 1 (z, y, x), got {kernel}"
                )
        return kernels

    @model_validator(mode="after")
    def _kernel_per_level(self) -> UNetConfig:
        if self.kernel_sizes is None:
            return self
        # the default kernel_size may stand beside it: a saved run's config.yaml holds both
        if self.kernel_size != type(self).model_fields["kernel_size"].default:
            raise ValueError("kernel_sizes replaces kernel_size: give only one of them")
        if len(self.kernel_sizes) != self.num_levels:
            raise ValueError(
                f"kernel_sizes holds {len(self.kernel_sizes)} kernels but the U-Net has "
                f"{self.num_levels} levels (downsample_factors + 1): give one (z, y, x) "
                "kernel per level, top first"
            )
        return self

    @property
    def level_kernel_shapes(self) -> tuple[tuple[int, ...], ...]:
        """The (z, y, x) convolution kernel of each level, top first."""
        if self.kernel_sizes is not None:
            return tuple(tuple(kernel) for kernel in self.kernel_sizes)
        if isinstance(self.kernel_size, int):
            return ((self.kernel_size,) * DIMS,) * self.num_levels
        return (tuple(self.kernel_size),) * self.num_levels

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        """The largest convolution kernel per axis (z, y, x), over all levels."""
        return tuple(max(sizes) for sizes in zip(*self.level_kernel_shapes, strict=True))

    def level_shrink(self, level: int) -> tuple[int, ...]:
        """Voxels per axis that one pass of a level's convolutions removes."""
        return tuple(self.num_convs_per_level * (k - 1) for k in self.level_kernel_shapes[level])

    @property
    def num_levels(self) -> int:
        """Number of resolution levels, the bottom one included."""
        return len(self.downsample_factors) + 1

    @property
    def output_factor(self) -> Coordinate:
        """Output voxel size over input voxel size, per axis (``output_downsample``)."""
        return Coordinate(self.output_downsample)

    def output_shape(self, input_shape: Sequence[int]) -> Coordinate:
        """The output shape for an input shape, by arithmetic; see ``output_shape``."""
        return output_shape(self, input_shape)

    def valid_input_shape(self, approx_shape: Sequence[int]) -> Coordinate:
        """The smallest valid input shape >= ``approx_shape``; see ``valid_input_shape``."""
        return valid_input_shape(self, approx_shape)

    def build(self, in_channels: int, out_channels: int) -> UNet:
        return UNet(self, in_channels, out_channels)


class _InvalidSize(Exception):
    """An input size that does not fit the network along one axis (internal)."""


def _axis_output_size(config: UNetConfig, axis: int, size: int) -> int:
    """Follow one axis through the network; raise ``_InvalidSize`` where it breaks."""
    shrink = [config.level_shrink(level)[axis] for level in range(config.num_levels)]
    factors = [f[axis] for f in config.downsample_factors]
    for level, factor in enumerate(factors):
        size -= shrink[level]
        if size <= 0:
            raise _InvalidSize(f"the level-{level} convolutions shrink it to {size}")
        if size % factor:
            raise _InvalidSize(
                f"the level-{level} convolutions leave {size}, "
                f"not divisible by downsample factor {factor}"
            )
        size //= factor
    size -= shrink[-1]
    if size <= 0:
        raise _InvalidSize(f"the bottom convolutions shrink it to {size}")
    for level in reversed(range(len(factors))):
        size *= factors[level]
        crop_factor = math.prod(factors[level:])
        size = ((size - shrink[level]) // crop_factor) * crop_factor
        if size <= 0:
            raise _InvalidSize(f"the level-{level} upsampling path shrinks it to {size}")
    factor = config.output_downsample[axis]
    if size % factor:
        raise _InvalidSize(f"the output of {size} is not divisible by output_downsample {factor}")
    return size // factor


def axis_output_size(config: UNetConfig, axis: int, size: int) -> int | None:
    """The output size along ``axis`` (0: z) for ``size`` input voxels, or None where the
    network cannot take that size."""
    try:
        return _axis_output_size(config, axis, size)
    except _InvalidSize:
        return None


def _axis_is_valid(config: UNetConfig, axis: int, size: int) -> bool:
    try:
        _axis_output_size(config, axis, size)
    except _InvalidSize:
        return False
    return True


def _nearest_valid_sizes(config: UNetConfig, axis: int, size: int) -> tuple[int | None, int]:
    """The largest valid size <= ``size`` (None if there is none) and the smallest >= it."""
    below = next((s for s in range(size, 0, -1) if _axis_is_valid(config, axis, s)), None)
    above = max(size, 1)
    while not _axis_is_valid(config, axis, above):
        above += 1
    return below, above


def output_shape(config: UNetConfig, input_shape: Sequence[int]) -> Coordinate:
    """The (z, y, x) output shape in output voxels for an input shape in input voxels.

    Raises ``ConfigError`` naming ``trainer.input_shape`` with the nearest valid shapes if the
    network cannot take this input.
    """
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != DIMS:
        raise ConfigError(
            f"{INPUT_SHAPE_KEY}: expected {DIMS} sizes (z, y, x), got {list(input_shape)}"
        )
    sizes = []
    for axis, size in enumerate(input_shape):
        try:
            sizes.append(_axis_output_size(config, axis, size))
        except _InvalidSize as error:
            raise ConfigError(_invalid_shape_message(config, input_shape, axis, error)) from None
    return Coordinate(sizes)


def _invalid_shape_message(
    config: UNetConfig, input_shape: tuple[int, ...], axis: int, error: _InvalidSize
) -> str:
    nearest = [_nearest_valid_sizes(config, a, s) for a, s in enumerate(input_shape)]
    above = [upper for _, upper in nearest]
    message = (
        f"{INPUT_SHAPE_KEY}: {list(input_shape)} does not fit the U-Net "
        f"({AXIS_NAMES[axis]} = {input_shape[axis]}: {error}); nearest valid shapes: "
    )
    if all(lower is not None for lower, _ in nearest):
        message += f"{[lower for lower, _ in nearest]} or "
    return message + f"{above}"


def valid_input_shape(config: UNetConfig, approx_shape: Sequence[int]) -> Coordinate:
    """The smallest valid (z, y, x) input shape that is >= ``approx_shape`` on every axis."""
    if len(approx_shape) != DIMS:
        raise ConfigError(
            f"{INPUT_SHAPE_KEY}: expected {DIMS} sizes (z, y, x), got {list(approx_shape)}"
        )
    return Coordinate(
        _nearest_valid_sizes(config, axis, int(size))[1] for axis, size in enumerate(approx_shape)
    )


class _ConvBlock(torch.nn.Sequential):
    """``num_convs`` valid convolutions of one level, each followed by (batch norm and)
    ReLU."""

    def __init__(self, config: UNetConfig, level: int, in_channels: int, out_channels: int):
        layers: list[torch.nn.Module] = []
        for i in range(config.num_convs_per_level):
            layers.append(
                torch.nn.Conv3d(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    config.level_kernel_shapes[level],
                    padding=0,
                    bias=not config.batch_norm,
                )
            )
            if config.batch_norm:
                layers.append(torch.nn.BatchNorm3d(out_channels))
            layers.append(torch.nn.ReLU(inplace=True))
        super().__init__(*layers)


def _center_crop(tensor: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Crop the spatial (last three) axes of ``tensor`` to ``shape`` around the centre."""
    slices = [
        slice((have - want) // 2, (have - want) // 2 + want)
        for have, want in zip(tensor.shape[-DIMS:], shape, strict=True)
    ]
    return tensor[(..., *slices)]


class UNet(torch.nn.Module):
    """A 3D U-Net: (B, in_channels, z, y, x) -> logits (B, out_channels, z', y', x').

    With ``output_downsample``, a strided convolution (kernel = stride = factor) ends the
    up path, so the output's voxels are that many times the input's (z', y', x' count
    output voxels).

    Args:
        config: the architecture.
        in_channels: channels of the input (1 for a single raw volume).
        out_channels: channels of the logits (the task's number of channels).
    """

    def __init__(self, config: UNetConfig, in_channels: int, out_channels: int):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be >= 1, got {in_channels=} {out_channels=}")
        self.config = config
        self.in_channels = in_channels
        self.out_channels = out_channels
        fmaps = [config.num_fmaps * config.fmap_inc_factor**lv for lv in range(config.num_levels)]
        factors = config.downsample_factors

        self.down_blocks = torch.nn.ModuleList(
            _ConvBlock(config, lv, in_channels if lv == 0 else fmaps[lv - 1], fmaps[lv])
            for lv in range(config.num_levels)
        )
        self.pools = torch.nn.ModuleList(torch.nn.MaxPool3d(f, stride=f) for f in factors)
        self.upsamples = torch.nn.ModuleList(
            torch.nn.ConvTranspose3d(fmaps[lv + 1], fmaps[lv + 1], factors[lv], stride=factors[lv])
            if config.upsample == "transposed"
            else torch.nn.Upsample(scale_factor=tuple(float(f) for f in factors[lv]))
            for lv in range(len(factors))
        )
        self.up_blocks = torch.nn.ModuleList(
            _ConvBlock(config, lv, fmaps[lv] + fmaps[lv + 1], fmaps[lv])
            for lv in range(len(factors))
        )
        self.output_downsample = None
        factor = tuple(config.output_downsample)
        if factor != (1,) * DIMS:
            # learned, so the network chooses how fine structure shows at the coarse grid
            self.output_downsample = torch.nn.Sequential(
                torch.nn.Conv3d(fmaps[0], fmaps[0], factor, stride=factor),
                torch.nn.ReLU(inplace=True),
            )
        self.head = torch.nn.Conv3d(fmaps[0], out_channels, 1)

    def output_shape(self, input_shape: Sequence[int]) -> Coordinate:
        """The (z, y, x) output shape for an input shape; see ``output_shape``."""
        return output_shape(self.config, input_shape)

    def valid_input_shape(self, approx_shape: Sequence[int]) -> Coordinate:
        """The smallest valid input shape >= ``approx_shape``; see ``valid_input_shape``."""
        return valid_input_shape(self.config, approx_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != DIMS + 2:
            raise ValueError(f"expected a (B, C, z, y, x) tensor, got shape {tuple(x.shape)}")
        # Fails early with a message naming the config key instead of a torch size mismatch.
        self.output_shape(x.shape[-DIMS:])
        skips = []
        for level, pool in enumerate(self.pools):
            x = self.down_blocks[level](x)
            skips.append(x)
            x = pool(x)
        x = self.down_blocks[-1](x)
        for level in reversed(range(len(self.pools))):
            x = self.upsamples[level](x)
            shrink = self.config.level_shrink(level)
            crop_factors = [
                math.prod(f[axis] for f in self.config.downsample_factors[level:])
                for axis in range(DIMS)
            ]
            x = _center_crop(
                x,
                [
                    ((s - c) // f) * f + c
                    for s, c, f in zip(x.shape[-DIMS:], shrink, crop_factors, strict=True)
                ],
            )
            x = torch.cat([_center_crop(skips[level], x.shape[-DIMS:]), x], dim=1)
            x = self.up_blocks[level](x)
        if self.output_downsample is not None:
            x = self.output_downsample(x)
        return self.head(x)


def build_model(config: UNetConfig, in_channels: int, out_channels: int) -> UNet:
    """Build the U-Net described by ``config`` (as ``voltrain.models.build_model``, which
    builds any registered model)."""
    return base.build_model(config, in_channels, out_channels)
