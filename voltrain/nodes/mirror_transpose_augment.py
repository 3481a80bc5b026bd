"""Random mirroring and axis transposition of raw, gt and mask, applied identically."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate, Roi

from voltrain.errors import ConfigError
from voltrain.kernels.augment_rng import augment_rng

# this augment's random stream (see voltrain.kernels.augment_rng)
RNG_STREAM = "simple"


@dataclass(frozen=True)
class MirrorTransposeParams:
    """The random draw of one ``MirrorTransposeAugment`` application.

    The output is ``transpose(mirror(input))``: ``mirror[a]`` flips spatial axis ``a`` of
    the upstream data, then output axis ``d`` holds upstream axis ``transpose[d]``.
    """

    apply: bool
    mirror: tuple[bool, ...]
    transpose: tuple[int, ...]

    @property
    def changes_data(self) -> bool:
        """Whether applying these params moves any voxel."""
        identity = tuple(range(len(self.transpose)))
        return self.apply and (any(self.mirror) or self.transpose != identity)


class MirrorTransposeAugment(gp.BatchFilter):
    """Randomly mirror and transpose spatial axes of several arrays in the same way.

    Mirroring flips each axis in ``mirror_axes`` with probability ``mirror_probability``;
    transposition permutes the axes in ``transpose_axes`` uniformly at random (e.g. only the
    in-plane axes ``[1, 2]`` of anisotropic EM). Both act about the centre of the request's
    total ROI, so arrays of different sizes centred on each other (raw around gt and mask)
    stay aligned. The upstream request is transformed to match: a transposition also swaps
    the requested extents. Axes that are transposed with each other must have the same
    voxel size in every array, checked in ``setup``. Arrays keep any leading channel axes.

    ``keys`` that upstream does not provide are ignored (e.g. a dataset without a mask),
    and arrays not in ``keys`` pass through unchanged.

    Args:
        keys: the arrays to transform together (raw, gt, mask).
        mirror_axes: spatial axes that may be mirrored; None means all.
        transpose_axes: spatial axes permuted among each other; None means all, [] none.
        mirror_probability: probability of mirroring each axis in ``mirror_axes``.
        p: probability of applying the augment to a sample at all.
    """

    def __init__(
        self,
        keys: Sequence[gp.ArrayKey],
        mirror_axes: Sequence[int] | None = None,
        transpose_axes: Sequence[int] | None = None,
        mirror_probability: float = 0.5,
        p: float = 1.0,
    ):
        if not 0.0 <= mirror_probability <= 1.0:
            raise ConfigError(f"mirror_probability must be in [0, 1], got {mirror_probability}")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"p must be in [0, 1], got {p}")
        self.keys = list(keys)
        self.mirror_axes = _distinct_axes(mirror_axes, "mirror_axes")
        self.transpose_axes = _distinct_axes(transpose_axes, "transpose_axes")
        self.mirror_probability = mirror_probability
        self.p = p
        self._params: MirrorTransposeParams | None = None

    def setup(self) -> None:
        self._keys = [key for key in self.keys if key in self.spec]
        if not self._keys:
            raise ConfigError(f"MirrorTransposeAugment: upstream provides none of {self.keys}")
        dims = {self.spec[key].voxel_size.dims for key in self._keys}
        if len(dims) != 1:
            raise ConfigError(f"MirrorTransposeAugment: {self._keys} differ in spatial dims")
        self._dims = dims.pop()
        self._mirror_axes = resolve_axes(self.mirror_axes, self._dims, "mirror_axes")
        self._transpose_axes = resolve_axes(self.transpose_axes, self._dims, "transpose_axes")
        self._check_voxel_sizes()
        no_mirror = self.mirror_probability == 0 or not self._mirror_axes
        if no_mirror and len(self._transpose_axes) < 2:
            warnings.warn("MirrorTransposeAugment never changes the data", stacklevel=2)
        self.enable_autoskip()
        for key in self._keys:
            self.updates(key, self.spec[key])

    def _check_voxel_sizes(self) -> None:
        voxel_sizes = {key: self.spec[key].voxel_size for key in self._keys}
        check_transpose_voxel_sizes(voxel_sizes, self._transpose_axes)

    def make_params(self, rng: np.random.Generator, dims: int) -> MirrorTransposeParams:
        """Draw whether to apply, which axes to mirror and the axis permutation."""
        mirror_axes = resolve_axes(self.mirror_axes, dims, "mirror_axes")
        transpose_axes = resolve_axes(self.transpose_axes, dims, "transpose_axes")
        apply = bool(rng.random() < self.p)
        flips = rng.random(dims) < self.mirror_probability
        mirror = tuple(bool(flips[a]) and a in mirror_axes for a in range(dims))
        transpose = list(range(dims))
        for axis, source in zip(transpose_axes, rng.permutation(transpose_axes), strict=True):
            transpose[axis] = int(source)
        return MirrorTransposeParams(apply=apply, mirror=mirror, transpose=tuple(transpose))

    def apply_transform(self, data: np.ndarray, params: MirrorTransposeParams) -> np.ndarray:
        """Mirror then transpose the trailing spatial axes of ``data`` (a contiguous copy)."""
        channels = data.ndim - len(params.transpose)
        flips = tuple(slice(None, None, -1) if m else slice(None) for m in params.mirror)
        data = data[(slice(None),) * channels + flips]
        order = tuple(range(channels)) + tuple(channels + a for a in params.transpose)
        # torch cannot wrap the negative strides of a mirrored view
        return np.ascontiguousarray(data.transpose(order))

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        params = self.make_params(augment_rng(request.random_seed, RNG_STREAM), self._dims)
        self._params = params
        keys = [key for key in self._keys if key in request]
        grid = self.spec.get_lcm_voxel_size(keys)
        doubled_centre = twice_centre([request[key].roi for key in keys], grid)
        deps = gp.BatchRequest()
        for key in keys:
            spec = request[key].copy()
            if params.changes_data:
                spec.roi = upstream_roi(spec.roi, params, doubled_centre, grid)
            deps[key] = spec
        return deps

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch | None:
        assert self._params is not None, "prepare() runs before process()"
        if not self._params.changes_data:
            return None
        outputs = gp.Batch()
        for key in self._keys:
            if key not in request:
                continue
            array = batch[key]
            spec = array.spec.copy()
            spec.roi = request[key].roi
            outputs[key] = gp.Array(self.apply_transform(array.data, self._params), spec)
        return outputs


def twice_centre(rois: Sequence[Roi], grid: Coordinate) -> Coordinate:
    """Twice the centre of ``rois`` together, on ``grid`` (the voxel sizes' common multiple).

    Twice, so that a centre between two voxels stays an integer; on the grid, so that
    mirrored ROIs start on a voxel of every array.
    """
    total = rois[0]
    for roi in rois[1:]:
        total = total.union(roi)
    twice = total.begin + total.end
    return twice - Coordinate(t % g for t, g in zip(twice, grid, strict=True))


def check_transpose_voxel_sizes(
    voxel_sizes: dict[gp.ArrayKey, Coordinate], transpose_axes: Sequence[int]
) -> None:
    """Raise ``ConfigError`` if an array's voxel size differs between ``transpose_axes``."""
    for key, voxel_size in voxel_sizes.items():
        if len({voxel_size[a] for a in transpose_axes}) > 1:
            raise ConfigError(
                f"transpose_axes {list(transpose_axes)}: {key} has voxel size "
                f"{tuple(voxel_size)}, which differs between these axes, so transposing "
                "them would distort it; list only axes of equal voxel size "
                "(e.g. transpose_axes: [1, 2] for anisotropic z)"
            )


def upstream_roi(
    roi: Roi, params: MirrorTransposeParams, twice_centre: Coordinate, grid: Coordinate
) -> Roi:
    """The upstream ROI whose mirrored and transposed data covers ``roi`` downstream.

    Mirroring axis ``a`` reflects about ``twice_centre[a] / 2``. Transposing moves
    downstream axis ``d`` onto upstream axis ``a = transpose[d]`` about the same centre,
    rounded to ``grid`` (the common multiple of the voxel sizes) so ROIs stay voxel-aligned.
    """
    dims = roi.dims
    begin = [0] * dims
    end = [0] * dims
    for d in range(dims):
        a = params.transpose[d]
        half_offset = (twice_centre[d] - twice_centre[a]) // 2
        offset = half_offset - half_offset % grid[d]
        low, high = roi.begin[d] - offset, roi.end[d] - offset
        if params.mirror[a]:
            low, high = twice_centre[a] - high, twice_centre[a] - low
        begin[a], end[a] = low, high
    return Roi(Coordinate(begin), Coordinate(end) - Coordinate(begin))


def _distinct_axes(axes: Sequence[int] | None, name: str) -> list[int] | None:
    if axes is None:
        return None
    axes = [int(axis) for axis in axes]
    if any(axis < 0 for axis in axes) or len(set(axes)) != len(axes):
        raise ConfigError(f"{name}: expected distinct spatial axis indices >= 0, got {axes}")
    return axes


def resolve_axes(axes: list[int] | None, dims: int, name: str) -> list[int]:
    """``axes``, or all ``dims`` spatial axes for None, checked against ``dims``."""
    if axes is None:
        return list(range(dims))
    for axis in axes:
        if axis >= dims:
            raise ConfigError(f"{name}: axis {axis} is out of range for {dims} spatial axes")
    return axes
