"""numba kernels of ``voltrain.kernels.resample``: one pass over the output, row by row.

The displacement is evaluated on the fly: once per output slice the control grid is
collapsed along z and interpolated along x, and each output row then blends four of those
rows, so no full-resolution coordinate field is ever built. The linear sampler also applies
per-voxel intensity operations (normalisation, scale and shift, noise) to the value it has
just interpolated, so the fused augment writes raw once. Kernels are single-threaded on
purpose: each data-loader worker owns one core.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from voltrain.kernels.counter_rng import NOISE_NONE, add_noise_row


@njit(cache=True, fastmath={"contract"})
def _slice_displacement(displacement, k, fz, wz, fx, wx, rows, columns, plane, plane_x):
    """Displacement on output slice ``k`` at control rows ``rows`` and output x ``columns``.

    Fills ``plane_x[y, 3, i]``: collapsing z first and interpolating along x once per
    slice leaves each output row a contiguous 4-tap blend of ``plane_x`` rows. ``plane``
    is scratch space of shape ``(gy, 3, gx)``.
    """
    start = np.uint64(fz[k])
    w0, w1, w2, w3 = wz[k, 0], wz[k, 1], wz[k, 2], wz[k, 3]
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    for y in rows:
        uy = np.uint64(y)
        for x in range(displacement.shape[2]):
            ux = np.uint64(x)
            for a in range(3):
                ua = np.uint64(a)
                plane[uy, ua, ux] = (
                    w0 * displacement[start, uy, ux, ua]
                    + w1 * displacement[start + one, uy, ux, ua]
                    + w2 * displacement[start + two, uy, ux, ua]
                    + w3 * displacement[start + three, uy, ux, ua]
                )
        for a in range(3):
            ua = np.uint64(a)
            for i in columns:
                ui = np.uint64(i)
                c = np.uint64(fx[ui])
                plane_x[uy, ua, ui] = (
                    wx[ui, 0] * plane[uy, ua, c]
                    + wx[ui, 1] * plane[uy, ua, c + one]
                    + wx[ui, 2] * plane[uy, ua, c + two]
                    + wx[ui, 3] * plane[uy, ua, c + three]
                )


@njit(cache=True)
def resample_linear(source, out, matrix, offset, displacement, fz, wz, fy, wy, fx, wx, ops):
    """Trilinear samples of C-contiguous ``source`` into float32 ``out``, then ``ops``.

    ``ops`` is ``VoxelOps.kernel_args()``, applied to each voxel.
    """
    # the loop is repeated in resample_nearest: one driver with a flag would compile the
    # unused sampler for every dtype too
    _, gy, gx, _ = displacement.shape
    nz, ny, nx = out.shape
    plane = np.empty((gy, 3, gx))
    plane_x = np.empty((gy, 3, nx))
    positions = np.empty((3, nx))
    rows, columns = np.arange(gy), np.arange(nx)
    flat = source.reshape(-1)
    for k in range(nz):
        _slice_displacement(displacement, k, fz, wz, fx, wx, rows, columns, plane, plane_x)
        for j in range(ny):
            _row_positions(matrix, offset, plane_x, fy, wy, k, j, positions)
            _trilinear_row(source, flat, positions, out[k, j])
            _voxel_ops_row(out[k, j], (k * ny + j) * nx, ops)


@njit(cache=True)
def resample_nearest(source, out, matrix, offset, displacement, fz, wz, fy, wy, fx, wx):
    """Nearest-neighbour samples of C-contiguous ``source`` into ``out`` (ids never blend)."""
    _, gy, gx, _ = displacement.shape
    nz, ny, nx = out.shape
    plane = np.empty((gy, 3, gx))
    plane_x = np.empty((gy, 3, nx))
    positions = np.empty((3, nx))
    rows, columns = np.arange(gy), np.arange(nx)
    flat = source.reshape(-1)
    for k in range(nz):
        _slice_displacement(displacement, k, fz, wz, fx, wx, rows, columns, plane, plane_x)
        for j in range(ny):
            _row_positions(matrix, offset, plane_x, fy, wy, k, j, positions)
            _nearest_row(source, flat, positions, out[k, j])


@njit(cache=True, fastmath={"contract"})
def _row_positions(matrix, offset, plane_x, fy, wy, k, j, positions):
    """Continuous source voxel indices of output row ``(k, j)``: affine plus displacement."""
    s = np.uint64(fy[j])
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    w0, w1, w2, w3 = wy[j, 0], wy[j, 1], wy[j, 2], wy[j, 3]
    for a in range(3):
        ua = np.uint64(a)
        base = offset[a] + matrix[a, 0] * k + matrix[a, 1] * j
        step = matrix[a, 2]
        for i in range(positions.shape[1]):
            ui = np.uint64(i)
            positions[ua, ui] = (
                base
                + step * i
                + w0 * plane_x[s, ua, ui]
                + w1 * plane_x[s + one, ua, ui]
                + w2 * plane_x[s + two, ua, ui]
                + w3 * plane_x[s + three, ua, ui]
            )


@njit(cache=True)
def position_bounds(
    matrix, offset, displacement, fz, wz, fy, wy, fx, wx, ks, js, is_, rows, lo, hi
):
    """Grow ``lo``/``hi`` to the source positions of output voxels ``ks x js x is_``.

    ``rows`` are the control rows the output rows ``js`` read.
    """
    _, gy, gx, _ = displacement.shape
    plane = np.empty((gy, 3, gx))
    plane_x = np.empty((gy, 3, wx.shape[0]))
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    for k in ks:
        _slice_displacement(displacement, k, fz, wz, fx, wx, rows, is_, plane, plane_x)
        for j in js:
            s = np.uint64(fy[j])
            for a in range(3):
                ua = np.uint64(a)
                base = offset[a] + matrix[a, 0] * k + matrix[a, 1] * j
                for i in is_:
                    ui = np.uint64(i)
                    position = (
                        base
                        + matrix[a, 2] * i
                        + wy[j, 0] * plane_x[s, ua, ui]
                        + wy[j, 1] * plane_x[s + one, ua, ui]
                        + wy[j, 2] * plane_x[s + two, ua, ui]
                        + wy[j, 3] * plane_x[s + three, ua, ui]
                    )
                    lo[a] = min(lo[a], position)
                    hi[a] = max(hi[a], position)


@njit(cache=True)
def _nearest_row(source, flat, positions, out_row):
    sz, sy, sx = source.shape
    syx = sy * sx
    for i in range(out_row.shape[0]):
        z = int(math.floor(positions[0, i] + 0.5))
        y = int(math.floor(positions[1, i] + 0.5))
        x = int(math.floor(positions[2, i] + 0.5))
        if 0 <= z < sz and 0 <= y < sy and 0 <= x < sx:
            out_row[i] = flat[np.uint64(z * syx + y * sx + x)]
        else:
            out_row[i] = 0


@njit(cache=True, fastmath={"contract"})
def _trilinear_row(source, flat, positions, out_row):
    # Unsigned flat indices: numba wraps negative signed indices around, which costs a
    # third of this loop; the bounds test makes every index here non-negative anyway.
    sz, sy, sx = source.shape
    syx = np.uint64(sy * sx)
    usx = np.uint64(sx)
    one = np.uint64(1)
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
            n = np.uint64(z0) * syx + np.uint64(y0) * usx + np.uint64(x0)
            m = n + syx
            c00 = _lerp(np.float32(flat[n]), np.float32(flat[n + one]), tx)
            c01 = _lerp(np.float32(flat[n + usx]), np.float32(flat[n + usx + one]), tx)
            c10 = _lerp(np.float32(flat[m]), np.float32(flat[m + one]), tx)
            c11 = _lerp(np.float32(flat[m + usx]), np.float32(flat[m + usx + one]), tx)
            out_row[i] = _lerp(_lerp(c00, c01, ty), _lerp(c10, c11, ty), tz)
        else:
            out_row[i] = _trilinear_clipped(source, pz, py, px)


@njit(cache=True, fastmath={"contract"})
def _lerp(a, b, t):
    return a + (b - a) * t


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


@njit(cache=True)
def _voxel_ops_row(row, first_index, ops):
    """Apply ``VoxelOps`` to one output row in place; voxel ``i`` has index first + i."""
    factor, scale, shift, clip_intensity, mode, key, noise_param, amount, clip_noise, base = ops
    if factor != 1.0 or scale != 1.0 or shift != 0.0 or clip_intensity:
        for i in range(row.shape[0]):
            # float32 arithmetic, as the separate Normalize and IntensityAugment nodes do it
            value = row[i] * factor * scale + shift
            if clip_intensity:
                value = min(max(value, np.float32(0.0)), np.float32(1.0))
            row[i] = value
    if mode != NOISE_NONE:
        add_noise_row(row, row, key, base + first_index, mode, noise_param, amount, clip_noise)
