"""The geometry ``voltrain init`` derives from the voxel size: U-Net downsampling, input
shape and which axes may be rotated or transposed.

Anisotropic data (serial-section EM at 40 x 4 x 4 nm) is downsampled in-plane first, until
the voxels are about as fine in-plane as along z, and only then along every axis, the way
networks for such data are usually built. Rotation and transposition stay within the plane
of equal voxel sizes, since swapping a 40 nm axis with a 4 nm one makes images the data
never holds. For the same reason, convolutions stay in-plane ([1, 3, 3]) on the levels
where the plane is still much finer than z.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from funlib.geometry import Coordinate

from voltrain.errors import DataError
from voltrain.models.unet import UNetConfig, axis_output_size

ANISOTROPY = 1.5
"""Axes whose voxel sizes differ by less than this factor count as one plane."""
FLAT_KERNEL_RATIO = 2.0
"""Axes this many times coarser than the finest get convolution kernel 1 (``kernel_sizes``)."""
MEMORY_USE = 0.75
"""Share of the accelerator's memory planned for activations; the rest is weights,
optimizer state and the CUDA context."""
BYTES_PER_FEATURE_VOXEL = 4 * 1.5
"""float32 activations, plus about half again for gradients and workspace while training."""


def fine_axes(voxel_size: Sequence[float]) -> list[int]:
    """The axes with the finest voxel size (within ``ANISOTROPY``): the imaging plane."""
    finest = min(voxel_size)
    return [axis for axis, size in enumerate(voxel_size) if size < finest * ANISOTROPY]


def is_anisotropic(voxel_size: Sequence[float]) -> bool:
    """Whether some axis is coarser than the finest by ``ANISOTROPY`` or more."""
    return len(fine_axes(voxel_size)) < len(voxel_size)


def downsample_factors(voxel_size: Sequence[float], levels: int) -> list[list[int]]:
    """Per U-Net level, the (z, y, x) pooling factors for this voxel size.

    At each level the axes finer than the coarsest by more than sqrt(factor) are pooled;
    once none is (the voxels are near-isotropic), every axis is. The factor is 3 for
    anisotropic data (three in-plane poolings of 3 bring 4 nm to 36 nm, near 40 nm) and 2
    for isotropic data. At 40 x 4 x 4 nm this gives [1, 3, 3], [1, 3, 3], [3, 3, 3].
    """
    factor = 3 if max(voxel_size) / min(voxel_size) >= 3 else 2
    current = [float(v) for v in voxel_size]
    factors = []
    for _ in range(levels):
        coarsest = max(current)
        pooled = [v < coarsest / math.sqrt(factor) for v in current]
        if not any(pooled):
            pooled = [True] * len(current)
        level = [factor if p else 1 for p in pooled]
        current = [v * f for v, f in zip(current, level, strict=True)]
        factors.append(level)
    return factors


def sections_are_coarse(voxel_size: Sequence[float]) -> bool:
    """Whether z is the coarse axis, as in serial-section EM (40 x 4 x 4 nm)."""
    return voxel_size[0] >= FLAT_KERNEL_RATIO * max(voxel_size[1:])


def kernel_sizes(voxel_size: Sequence[float], factors: list[list[int]]) -> list[list[int]] | None:
    """Per U-Net level, top first, the (z, y, x) convolution kernel for this voxel size, or
    None where every level would use 3 x 3 x 3.

    An axis whose voxels (after the pooling above the level) are at least
    ``FLAT_KERNEL_RATIO`` times the finest gets kernel 1: a 3-voxel kernel along 40 nm
    sections would mix sections before the 4 nm plane has any context. The bottom level
    convolves along every axis, so that even a shallow network sees neighbouring sections
    (an affinity along z needs them). At 40 x 4 x 4 nm with [1, 3, 3], [1, 3, 3], [3, 3, 3]
    pooling: [1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3].
    """
    current = [float(v) for v in voxel_size]
    kernels = []
    for level in factors:
        finest = min(current)
        kernels.append([1 if v >= FLAT_KERNEL_RATIO * finest else 3 for v in current])
        current = [v * f for v, f in zip(current, level, strict=True)]
    kernels.append([3] * len(current))
    return kernels if any(1 in kernel for kernel in kernels) else None


def activation_bytes_per_voxel(model: UNetConfig) -> float:
    """Approximate training memory per input voxel (batch of one): the feature maps kept
    for the backward pass at every level, down and up."""
    per_level = 2 * model.num_convs_per_level + 3  # convs both ways, pooled, upsampled, concat
    total, shrink = 0.0, 1
    for level in range(model.num_levels):
        total += model.num_fmaps * model.fmap_inc_factor**level / shrink
        if level < len(model.downsample_factors):
            shrink *= math.prod(model.downsample_factors[level])
    return total * per_level * BYTES_PER_FEATURE_VOXEL


def target_shape(model: UNetConfig, voxels: float) -> list[float]:
    """The (z, y, x) voxel counts to aim for with about ``voxels`` input voxels.

    Each axis is proportional to the network's context along it (input minus output):
    of all shapes with that many voxels, this one has the most output voxels. For the
    anisotropic networks above it is also a field of view of similar length in world units
    along every axis, since their context in voxels follows the voxel size.
    """
    # a context of 0 (kernel 1 and no pooling along an axis) would take no share
    contexts = [max(1, _context(model, axis)) for axis in range(len(model.kernel_shape))]
    scale = (voxels / math.prod(contexts)) ** (1 / len(contexts))
    return [scale * context for context in contexts]


def _context(model: UNetConfig, axis: int) -> int:
    """Input minus output voxels along ``axis``, at the smallest input the network takes."""
    size = 1  # every axis has a valid size: any size once it is large enough
    while (output := axis_output_size(model, axis, size)) is None:
        size += 1
    return size - output


def centred(model: UNetConfig) -> UNetConfig:
    """``model`` with factors changed so that every axis crops an even number of voxels.

    Prediction and blockwise validation centre each block's input on its output, which an
    odd crop does not allow (two poolings of 3 along an axis crop an odd number). The
    deepest pooling of 3 on such an axis becomes 2.
    """
    factors = [list(level) for level in model.downsample_factors]
    for axis in range(len(factors[0]) if factors else 0):
        candidate = model.model_copy(update={"downsample_factors": factors})
        if _context(candidate, axis) % 2 == 0:
            continue
        for level in reversed(factors):
            if level[axis] == 3:
                level[axis] = 2
                break
    return model.model_copy(update={"downsample_factors": factors})


def choose_input_shape(
    model: UNetConfig,
    target: Sequence[float],
    gt_shape: Sequence[int],
    tied_axes: Sequence[int],
) -> Coordinate:
    """The valid input shape nearest to ``target`` whose output fits into ``gt_shape``.

    Each axis takes the largest size the network accepts at or below its target (or the
    smallest above, if none is below). ``tied_axes`` (those transposed with each other)
    get one size, the largest that suits all of them, so a transposed sample keeps its shape.
    Raises ``DataError`` when not even the smallest valid input fits the labels.
    """
    sizes = []
    for axis, wanted in enumerate(target):
        size = _axis_size(model, axis, wanted, gt_shape[axis])
        if size is None:
            raise DataError(
                f"--gt: its {gt_shape[axis]} voxels along {'zyx'[axis]} are fewer than the "
                f"smallest output of a {len(model.downsample_factors)}-level U-Net; pass "
                "fewer --levels"
            )
        sizes.append(size)
    if len(tied_axes) > 1:
        common = min(sizes[axis] for axis in tied_axes)
        while common > 0 and not all(_fits(model, a, common, gt_shape[a]) for a in tied_axes):
            common -= 1
        for axis in tied_axes if common > 0 else ():
            sizes[axis] = common
    return Coordinate(sizes)


def _fits(model: UNetConfig, axis: int, size: int, gt_size: int) -> bool:
    output = axis_output_size(model, axis, size)
    return output is not None and output <= gt_size


def _axis_size(model: UNetConfig, axis: int, wanted: float, gt_size: int) -> int | None:
    """The largest fitting size <= ``wanted``, else the smallest above it, else None."""
    # an input larger than this has an output larger than gt_size
    pooling = math.prod(f[axis] for f in model.downsample_factors)
    shrink = 2 * model.num_convs_per_level * (model.kernel_shape[axis] - 1)
    limit = gt_size + ((model.num_levels + 1) * shrink + 1) * pooling
    wanted = max(1, int(wanted))
    for size in range(min(wanted, limit), 0, -1):
        if _fits(model, axis, size, gt_size):
            return size
    for size in range(wanted + 1, limit + 1):
        if _fits(model, axis, size, gt_size):
            return size
    return None


def estimated_gib(model: UNetConfig, shape: Sequence[int]) -> float:
    """The accelerator memory, in GiB, that training one sample of ``shape`` plans for."""
    return activation_bytes_per_voxel(model) * math.prod(shape) / MEMORY_USE / 2**30
