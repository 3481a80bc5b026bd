"""Resample a 3D array through a smooth world-space transform (numba kernels).

The transform maps output world coordinates to source world coordinates::

    T(x) = centre + rotation @ (x - centre) + shift + d(x)

where ``d`` is interpolated (Catmull-Rom, so the field passes through the control points
and has a continuous derivative) from displacements on a coarse control grid. The kernels
(``voltrain.kernels.resample_kernels``) evaluate ``d`` on the fly, so no full-resolution
coordinate field is ever built. Mirroring and transposing the output is one more linear
map in front of ``T`` (``WorldTransform.precomposed``), so a whole spatial augmentation
costs one resampling.

This module knows nothing about gunpowder: arrays, offsets and voxel sizes are numpy
values in world units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voltrain.kernels.counter_rng import NOISE_MODE_CODES, NOISE_NONE, seed_key
from voltrain.kernels.resample_kernels import position_bounds, resample_linear, resample_nearest


def catmull_rom_taps(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First of the four control-point indices and their weights for each grid coordinate.

    ``coords`` are positions in control-grid units (control point ``n`` sits at ``n``).
    Returns ``(first, weights)`` with shapes ``(N,)`` and ``(N, 4)``: the value at
    ``coords[i]`` is ``sum(weights[i, q] * points[first[i] + q] for q in range(4))``.
    """
    coords = np.asarray(coords, dtype=np.float64)
    cell = np.floor(coords)
    t = coords - cell
    t2 = t * t
    t3 = t2 * t
    weights = np.stack(
        [
            (-t3 + 2.0 * t2 - t) / 2.0,
            (3.0 * t3 - 5.0 * t2 + 2.0) / 2.0,
            (-3.0 * t3 + 4.0 * t2 + t) / 2.0,
            (t3 - t2) / 2.0,
        ],
        axis=-1,
    )
    return cell.astype(np.int64) - 1, weights


@dataclass(frozen=True)
class WorldTransform:
    """A linear map about ``centre``, a shift and a smooth displacement field, in world units.

    Args:
        centre: ``(3,)`` world point the linear map turns about.
        rotation: ``(3, 3)`` matrix applied to ``x - centre``: a rotation, possibly
            combined with a mirroring and an axis permutation.
        grid_origin: ``(3,)`` world position of control point ``[0, 0, 0]``.
        grid_spacing: ``(3,)`` world distance between control points.
        displacements: ``(gz, gy, gx, 3)`` displacement at each control point (world units).
            Output positions must lie at least one control point inside the grid and two
            before its far end (the interpolation reads four points per axis).
        shift: ``(3,)`` world translation added to every point; None means zero.
    """

    centre: np.ndarray
    rotation: np.ndarray
    grid_origin: np.ndarray
    grid_spacing: np.ndarray
    displacements: np.ndarray
    shift: np.ndarray | None = None

    @classmethod
    def identity(cls, begin: np.ndarray, extent: np.ndarray) -> WorldTransform:
        """``T(x) = x`` on the world box ``[begin, begin + extent)``."""
        begin = np.asarray(begin, dtype=np.float64)
        extent = np.maximum(np.asarray(extent, dtype=np.float64), 1.0)
        return cls(
            centre=begin + extent / 2.0,
            rotation=np.eye(3),
            grid_origin=begin - extent,
            grid_spacing=extent,
            displacements=np.zeros((5, 5, 5, 3)),
        )

    @property
    def translation(self) -> np.ndarray:
        return np.zeros(3) if self.shift is None else np.asarray(self.shift, dtype=np.float64)

    def grid_coords(self, positions: np.ndarray, axis: int) -> np.ndarray:
        """World positions along ``axis`` expressed in control-grid units."""
        return (positions - self.grid_origin[axis]) / self.grid_spacing[axis]

    def map_points(self, points: np.ndarray) -> np.ndarray:
        """Evaluate ``T`` at ``(N, 3)`` world points (a plain numpy reference)."""
        points = np.asarray(points, dtype=np.float64)
        taps = [catmull_rom_taps(self.grid_coords(points[:, a], a)) for a in range(3)]
        (fz, wz), (fy, wy), (fx, wx) = taps
        displacement = np.zeros_like(points)
        for qz in range(4):
            for qy in range(4):
                for qx in range(4):
                    weight = wz[:, qz] * wy[:, qy] * wx[:, qx]
                    values = self.displacements[fz + qz, fy + qy, fx + qx]
                    displacement += weight[:, None] * values
        affine = self.centre + (points - self.centre) @ self.rotation.T + self.translation
        return affine + displacement

    def precomposed(
        self, axes: Sequence[int], signs: Sequence[int], translation: np.ndarray
    ) -> WorldTransform:
        """``y -> T(x)`` with ``x[axes[d]] = signs[d] * y[d] + translation[axes[d]]``.

        That is ``T`` after a mirroring and transposition (``axes`` a permutation, ``signs``
        +1 or -1). The control grid is permuted and flipped along with the axes; Catmull-Rom
        interpolation is symmetric under reversal, so the field is the same, exactly.
        """
        translation = np.asarray(translation, dtype=np.float64)
        linear = np.zeros((3, 3))
        for d, (a, sign) in enumerate(zip(axes, signs, strict=True)):
            linear[a, d] = sign
        # the output point that maps onto the centre of T's linear part
        centre = linear.T @ (self.centre - translation)
        grid = np.transpose(self.displacements, (*axes, 3))
        origin, spacing = np.empty(3), np.empty(3)
        for d, (a, sign) in enumerate(zip(axes, signs, strict=True)):
            spacing[d] = self.grid_spacing[a]
            if sign > 0:
                origin[d] = self.grid_origin[a] - translation[a]
            else:
                last = self.grid_origin[a] + (self.displacements.shape[a] - 1) * spacing[d]
                origin[d] = translation[a] - last
                grid = np.flip(grid, axis=d)
        return WorldTransform(
            centre=centre,
            rotation=np.asarray(self.rotation, dtype=np.float64) @ linear,
            grid_origin=origin,
            grid_spacing=spacing,
            displacements=np.ascontiguousarray(grid),
            shift=self.translation + self.centre - centre,
        )


@dataclass(frozen=True)
class VoxelOps:
    """Per-voxel operations on linearly resampled values, applied in this order.

    ``value * factor`` (normalisation); ``value * scale + shift``, clipped to [0, 1] if
    ``clip_intensity``; noise of ``noise_mode`` (``"gaussian"``, ``"poisson"``, ``"s&p"``
    or None) from ``noise_seed`` with ``noise_var`` and ``noise_amount`` as
    ``NoiseAugment`` reads them, clipped to [0, 1] if ``clip_noise``. Voxel ``n`` (C order)
    of the output draws the noise of index ``first_index + n``. The default does nothing.
    """

    factor: float = 1.0
    scale: float = 1.0
    shift: float = 0.0
    clip_intensity: bool = False
    noise_mode: str | None = None
    noise_seed: int = 0
    noise_var: float = 0.0
    noise_amount: float = 0.0
    clip_noise: bool = False
    first_index: int = 0

    def kernel_args(self) -> tuple:
        """The tuple ``resample_kernels.resample_linear`` takes as ``ops``."""
        mode = NOISE_NONE if self.noise_mode is None else NOISE_MODE_CODES[self.noise_mode]
        noise_param = math.sqrt(self.noise_var) if self.noise_mode == "gaussian" else self.noise_var
        return (
            np.float32(self.factor),
            np.float32(self.scale),
            np.float32(self.shift),
            bool(self.clip_intensity),
            np.int64(mode),
            seed_key(self.noise_seed),
            float(noise_param),
            float(self.noise_amount),
            bool(self.clip_noise),
            np.int64(self.first_index),
        )


def plane_rotation(axis_a: int, axis_b: int, angle: float) -> np.ndarray:
    """``(3, 3)`` rotation by ``angle`` radians within the plane of two spatial axes."""
    rotation = np.eye(3)
    cos, sin = math.cos(angle), math.sin(angle)
    rotation[axis_a, axis_a] = cos
    rotation[axis_a, axis_b] = -sin
    rotation[axis_b, axis_a] = sin
    rotation[axis_b, axis_b] = cos
    return rotation


def axis_angle_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """``(3, 3)`` rotation by ``angle`` radians about the 3-vector ``axis``."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + math.sin(angle) * cross + (1.0 - math.cos(angle)) * cross @ cross


def resample(
    source: np.ndarray,
    source_offset: np.ndarray,
    source_voxel_size: np.ndarray,
    out_offset: np.ndarray,
    out_voxel_size: np.ndarray,
    out_shape: tuple[int, int, int],
    transform: WorldTransform,
    linear: bool,
    ops: VoxelOps | None = None,
) -> np.ndarray:
    """Sample ``source`` at ``T(x)`` for the centre ``x`` of every output voxel.

    ``linear`` selects trilinear interpolation (output float32, then ``ops`` on each
    voxel) or nearest neighbour (output keeps ``source.dtype``, so label ids are never
    blended). Samples outside ``source`` read zeros there.
    """
    index_map = source_index_map(
        transform, source_offset, source_voxel_size, out_offset, out_voxel_size, out_shape
    )
    source = np.ascontiguousarray(source)
    if linear:
        out = np.empty(out_shape, dtype=np.float32)
        resample_linear(source, out, *index_map, (ops or VoxelOps()).kernel_args())
    else:
        out = np.empty(out_shape, dtype=source.dtype)
        resample_nearest(source, out, *index_map)
    return out


def source_box(
    transform: WorldTransform,
    out_offset: np.ndarray,
    out_voxel_size: np.ndarray,
    out_shape: tuple[int, int, int],
    source_voxel_size: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """World ``(begin, end)``, on the source voxel grid, of every voxel ``resample`` reads.

    ``T`` is evaluated at every voxel centre on the faces of the output box, where its
    extremes lie unless the deformation folds, and on an interior lattice of about two
    points per control cell that catches folds. One voxel of slack is added on each side.
    """
    source_voxel_size = np.asarray(source_voxel_size, dtype=np.float64)
    out_voxel_size = np.asarray(out_voxel_size, dtype=np.float64)
    index_map = source_index_map(
        transform, np.zeros(3), source_voxel_size, out_offset, out_voxel_size, out_shape
    )
    every = [np.arange(n) for n in out_shape]
    ends = [np.unique([0, n - 1]) for n in out_shape]
    strides = np.maximum(1, (transform.grid_spacing / out_voxel_size / 2).astype(int))
    lattice = [np.unique(np.r_[0:n:s, n - 1]) for n, s in zip(out_shape, strides, strict=True)]
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for index_sets in [
        (ends[0], every[1], every[2]),
        (every[0], ends[1], every[2]),
        (every[0], every[1], ends[2]),
        lattice,
    ]:
        ks, js, is_ = index_sets
        # only the control rows that the output rows js blend
        fy = index_map[5]
        rows = np.unique(fy[js][:, None] + np.arange(4)[None, :])
        position_bounds(*index_map, ks, js, is_, rows, lo, hi)
    # trilinear reads voxels floor(f) and floor(f) + 1, nearest one of them
    begin = (np.floor(lo) - 1) * source_voxel_size
    end = (np.floor(hi) + 3) * source_voxel_size
    return begin, end


def source_index_map(
    transform, source_offset, source_voxel_size, out_offset, out_voxel_size, out_shape
):
    """Kernel arguments mapping output voxel indices to continuous source voxel indices.

    ``f = matrix @ out_index + offset + d / source_voxel_size``, with ``d`` interpolated
    from ``displacement`` (in source voxels) by the per-axis Catmull-Rom taps.
    """
    source_offset = np.asarray(source_offset, dtype=np.float64)
    source_voxel_size = np.asarray(source_voxel_size, dtype=np.float64)
    out_offset = np.asarray(out_offset, dtype=np.float64)
    out_voxel_size = np.asarray(out_voxel_size, dtype=np.float64)
    rotation = np.asarray(transform.rotation, dtype=np.float64)
    centre = np.asarray(transform.centre, dtype=np.float64)

    matrix = rotation * out_voxel_size[None, :] / source_voxel_size[:, None]
    first_centre = out_offset + 0.5 * out_voxel_size
    mapped = centre + rotation @ (first_centre - centre) + transform.translation
    offset = (mapped - source_offset) / source_voxel_size - 0.5
    displacement = np.ascontiguousarray(transform.displacements / source_voxel_size)

    taps = []
    for axis in range(3):
        centres = out_offset[axis] + (np.arange(out_shape[axis]) + 0.5) * out_voxel_size[axis]
        first, weights = catmull_rom_taps(transform.grid_coords(centres, axis))
        if first.size and (first.min() < 0 or first.max() + 3 >= displacement.shape[axis]):
            raise ValueError(f"output axis {axis} is not covered by the control grid")
        taps += [first, weights]
    return (matrix, offset, displacement, *taps)
