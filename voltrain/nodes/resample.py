"""Resample a 3D array through a smooth world-space transform (numba kernels).

The transform maps output world coordinates to source world coordinates::

    T(x) = centre + rotation @ (x - centre) + d(x)

where ``d`` is interpolated (Catmull-Rom, so the field passes through the control points
and has a continuous derivative) from displacements on a coarse control grid. The kernels
evaluate ``d`` on the fly: once per output slice the control grid is collapsed along z and
interpolated along x, and each output row then blends four of those rows, so no
full-resolution coordinate field is ever built.

This module knows nothing about gunpowder: arrays, offsets and voxel sizes are numpy
values in world units. Kernels are single-threaded on purpose: each data-loader worker
owns one core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit


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
    """A rotation about ``centre`` plus a smooth displacement field, in world units.

    Args:
        centre: ``(3,)`` world point the rotation turns about.
        rotation: ``(3, 3)`` rotation matrix (applied to ``x - centre``).
        grid_origin: ``(3,)`` world position of control point ``[0, 0, 0]``.
        grid_spacing: ``(3,)`` world distance between control points.
        displacements: ``(gz, gy, gx, 3)`` displacement at each control point (world units).
            Output positions must lie at least one control point inside the grid and two
            before its far end (the interpolation reads four points per axis).
    """

    centre: np.ndarray
    rotation: np.ndarray
    grid_origin: np.ndarray
    grid_spacing: np.ndarray
    displacements: np.ndarray

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
        affine = self.centre + (points - self.centre) @ self.rotation.T
        return affine + displacement


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
) -> np.ndarray:
    """Sample ``source`` at ``T(x)`` for the centre ``x`` of every output voxel.

    ``linear`` selects trilinear interpolation (output float32) or nearest neighbour
    (output keeps ``source.dtype``, so label ids are never blended). Samples outside
    ``source`` read zeros there.
    """
    index_map = _source_index_map(
        transform, source_offset, source_voxel_size, out_offset, out_voxel_size, out_shape
    )
    out = np.empty(out_shape, dtype=np.float32 if linear else source.dtype)
    kernel = _resample_linear if linear else _resample_nearest
    kernel(source, out, *index_map)
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
    index_map = _source_index_map(
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
        _position_bounds(*index_map, ks, js, is_, rows, lo, hi)
    # trilinear reads voxels floor(f) and floor(f) + 1, nearest one of them
    begin = (np.floor(lo) - 1) * source_voxel_size
    end = (np.floor(hi) + 3) * source_voxel_size
    return begin, end


def _source_index_map(
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
    mapped = centre + rotation @ (first_centre - centre)
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


@njit(cache=True)
def _slice_displacement(displacement, k, fz, wz, fx, wx, rows, columns, plane, plane_x):
    """Displacement on output slice ``k`` at control rows ``rows`` and output x ``columns``.

    Fills ``plane_x[y, 3, i]``: collapsing z first and interpolating along x once per
    slice leaves each output row a contiguous 4-tap blend of ``plane_x`` rows.
    """
    start = fz[k]
    for y in rows:
        for x in range(displacement.shape[2]):
            for a in range(3):
                plane[y, x, a] = (
                    wz[k, 0] * displacement[start, y, x, a]
                    + wz[k, 1] * displacement[start + 1, y, x, a]
                    + wz[k, 2] * displacement[start + 2, y, x, a]
                    + wz[k, 3] * displacement[start + 3, y, x, a]
                )
        for a in range(3):
            for i in columns:
                c = fx[i]
                plane_x[y, a, i] = (
                    wx[i, 0] * plane[y, c, a]
                    + wx[i, 1] * plane[y, c + 1, a]
                    + wx[i, 2] * plane[y, c + 2, a]
                    + wx[i, 3] * plane[y, c + 3, a]
                )


@njit(cache=True)
def _resample_linear(source, out, matrix, offset, displacement, fz, wz, fy, wy, fx, wx):
    # the loop is repeated in _resample_nearest: one driver with a flag would compile the
    # unused sampler for every dtype too
    _, gy, gx, _ = displacement.shape
    nz, ny, nx = out.shape
    plane = np.empty((gy, gx, 3))
    plane_x = np.empty((gy, 3, nx))
    positions = np.empty((3, nx))
    rows, columns = np.arange(gy), np.arange(nx)
    for k in range(nz):
        _slice_displacement(displacement, k, fz, wz, fx, wx, rows, columns, plane, plane_x)
        for j in range(ny):
            _row_positions(matrix, offset, plane_x, fy, wy, k, j, positions)
            _trilinear_row(source, positions, out[k, j])


@njit(cache=True)
def _resample_nearest(source, out, matrix, offset, displacement, fz, wz, fy, wy, fx, wx):
    _, gy, gx, _ = displacement.shape
    nz, ny, nx = out.shape
    plane = np.empty((gy, gx, 3))
    plane_x = np.empty((gy, 3, nx))
    positions = np.empty((3, nx))
    rows, columns = np.arange(gy), np.arange(nx)
    for k in range(nz):
        _slice_displacement(displacement, k, fz, wz, fx, wx, rows, columns, plane, plane_x)
        for j in range(ny):
            _row_positions(matrix, offset, plane_x, fy, wy, k, j, positions)
            _nearest_row(source, positions, out[k, j])


@njit(cache=True)
def _row_positions(matrix, offset, plane_x, fy, wy, k, j, positions):
    """Continuous source voxel indices of output row ``(k, j)``: affine plus displacement."""
    s = fy[j]
    w0, w1, w2, w3 = wy[j, 0], wy[j, 1], wy[j, 2], wy[j, 3]
    for a in range(3):
        base = offset[a] + matrix[a, 0] * k + matrix[a, 1] * j
        step = matrix[a, 2]
        for i in range(positions.shape[1]):
            positions[a, i] = (
                base
                + step * i
                + w0 * plane_x[s, a, i]
                + w1 * plane_x[s + 1, a, i]
                + w2 * plane_x[s + 2, a, i]
                + w3 * plane_x[s + 3, a, i]
            )


@njit(cache=True)
def _position_bounds(
    matrix, offset, displacement, fz, wz, fy, wy, fx, wx, ks, js, is_, rows, lo, hi
):
    """Grow ``lo``/``hi`` to the source positions of output voxels ``ks x js x is_``.

    ``rows`` are the control rows the output rows ``js`` read.
    """
    _, gy, gx, _ = displacement.shape
    plane = np.empty((gy, gx, 3))
    plane_x = np.empty((gy, 3, wx.shape[0]))
    for k in ks:
        _slice_displacement(displacement, k, fz, wz, fx, wx, rows, is_, plane, plane_x)
        for j in js:
            s = fy[j]
            for a in range(3):
                base = offset[a] + matrix[a, 0] * k + matrix[a, 1] * j
                for i in is_:
                    position = (
                        base
                        + matrix[a, 2] * i
                        + wy[j, 0] * plane_x[s, a, i]
                        + wy[j, 1] * plane_x[s + 1, a, i]
                        + wy[j, 2] * plane_x[s + 2, a, i]
                        + wy[j, 3] * plane_x[s + 3, a, i]
                    )
                    lo[a] = min(lo[a], position)
                    hi[a] = max(hi[a], position)


@njit(cache=True)
def _nearest_row(source, positions, out_row):
    sz, sy, sx = source.shape
    for i in range(out_row.shape[0]):
        z = int(math.floor(positions[0, i] + 0.5))
        y = int(math.floor(positions[1, i] + 0.5))
        x = int(math.floor(positions[2, i] + 0.5))
        if 0 <= z < sz and 0 <= y < sy and 0 <= x < sx:
            out_row[i] = source[z, y, x]
        else:
            out_row[i] = 0


@njit(cache=True)
def _trilinear_row(source, positions, out_row):
    sz, sy, sx = source.shape
    for i in range(out_row.shape[0]):
        pz = positions[0, i]
        py = positions[1, i]
        px = positions[2, i]
        z0 = int(math.floor(pz))
        y0 = int(math.floor(py))
        x0 = int(math.floor(px))
        if 0 <= z0 and z0 + 1 < sz and 0 <= y0 and y0 + 1 < sy and 0 <= x0 and x0 + 1 < sx:
            tz = np.float32(pz - z0)
            ty = np.float32(py - y0)
            tx = np.float32(px - x0)
            uz = np.float32(1.0) - tz
            uy = np.float32(1.0) - ty
            ux = np.float32(1.0) - tx
            c00 = source[z0, y0, x0] * ux + source[z0, y0, x0 + 1] * tx
            c01 = source[z0, y0 + 1, x0] * ux + source[z0, y0 + 1, x0 + 1] * tx
            c10 = source[z0 + 1, y0, x0] * ux + source[z0 + 1, y0, x0 + 1] * tx
            c11 = source[z0 + 1, y0 + 1, x0] * ux + source[z0 + 1, y0 + 1, x0 + 1] * tx
            out_row[i] = (c00 * uy + c01 * ty) * uz + (c10 * uy + c11 * ty) * tz
        else:
            out_row[i] = _trilinear_clipped(source, pz, py, px)


@njit(cache=True)
def _trilinear_clipped(source, pz, py, px):
    """Trilinear sample near or past the border: taps outside the source read as zero."""
    sz, sy, sx = source.shape
    z0 = int(math.floor(pz))
    y0 = int(math.floor(py))
    x0 = int(math.floor(px))
    value = 0.0
    for dz in range(2):
        wz = pz - z0 if dz else 1.0 - (pz - z0)
        z = z0 + dz
        if z < 0 or z >= sz or wz == 0.0:
            continue
        for dy in range(2):
            wy = py - y0 if dy else 1.0 - (py - y0)
            y = y0 + dy
            if y < 0 or y >= sy or wy == 0.0:
                continue
            for dx in range(2):
                wx = px - x0 if dx else 1.0 - (px - x0)
                x = x0 + dx
                if x < 0 or x >= sx or wx == 0.0:
                    continue
                value += wz * wy * wx * source[z, y, x]
    return value
