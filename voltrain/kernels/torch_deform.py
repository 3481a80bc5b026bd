"""The fused raw resampling on the training device (torch), for ``deform_on_device``.

With ``TrainingPipeline(deform_on_device=True)`` the loader workers do not resample raw:
they read its source box (a fixed size, so samples stack into batches) and pack the
coordinate map and the per-voxel operations into one float64 vector (``pack_raw_map``).
The trainer moves both to the device and calls ``deform_raw`` there. It evaluates the
same map as the numba kernel (``WorldTransform`` after mirroring, Catmull-Rom displacement)
with ``grid_sample``, then normalises, changes intensities and adds the same counter-based
noise (``counter_rng``): the result equals the CPU path up to float32 rounding.

Labels, mask, targets and the ``min_masked`` check stay in the workers: they are small.
"""

from __future__ import annotations

import numpy as np
import torch

from voltrain.kernels.counter_rng import (
    _BINS,
    NOISE_GAUSSIAN,
    NOISE_POISSON,
    NOISE_SALT_AND_PEPPER,
    QUANTILES_32,
    TABLE_BITS,
    normals_at,
)

# layout of the packed vector
MATRIX, OFFSET, COORD_ORIGIN, COORD_STEP = slice(0, 9), slice(9, 12), slice(12, 15), slice(15, 18)
OUT_SHAPE, GRID_SHAPE, OPS, KEY, FIRST_INDEX = (
    slice(18, 21),
    slice(21, 24),
    slice(24, 32),
    slice(32, 34),
    34,
)
HEADER = 35


def device_box_shape(
    out_shape: np.ndarray,
    voxel_size: np.ndarray,
    rotation_plane: tuple[int, int] | None,
    rotates: bool,
    jitter_sigma: np.ndarray,
) -> tuple[int, int, int]:
    """Voxels per axis of a source box that holds raw's source for any draw of the augment.

    A rotation in 3D can turn any direction of the output box onto any axis: its diagonal
    bounds every axis. Within a plane, only the two axes of that plane mix; transpositions
    swap axes of equal voxel size. Displacements
    are bounded by 6 jitter sigmas (a farther draw would read zeros at the very edge), plus
    4 voxels for interpolation and rounding.
    """
    extent = np.asarray(out_shape, dtype=np.float64) * voxel_size
    reach = extent.copy()
    if rotates and rotation_plane is None:
        reach[:] = np.linalg.norm(extent)
    elif rotates:
        reach[list(rotation_plane)] = np.linalg.norm(extent[list(rotation_plane)])
    # a transposition swaps axes of equal voxel size: each must hold the other's reach
    reach = np.array([reach[voxel_size == v].max() for v in voxel_size])
    margin = 6.0 * np.asarray(jitter_sigma, dtype=np.float64) + 4.0 * voxel_size
    return tuple(
        int(np.ceil((r + 2.0 * m) / v)) for r, m, v in zip(reach, margin, voxel_size, strict=True)
    )


def pack_raw_map(
    index_map: tuple, out_shape, coord_origin, coord_step, ops: tuple, grid_size: int
) -> np.ndarray:
    """One float64 vector holding the map and the ops of one sample's raw.

    ``index_map`` is ``resample.source_index_map``'s result, ``ops`` is
    ``VoxelOps.kernel_args()``; the displacement grid is zero-padded to ``grid_size`` per
    axis so that every sample's vector has the same length.
    """
    matrix, offset, displacement = index_map[:3]
    factor, scale, shift, clip_intensity, mode, key, param, amount, clip_noise, first = ops
    vector = np.zeros(HEADER + grid_size**3 * 3)
    vector[MATRIX] = np.ravel(matrix)
    vector[OFFSET] = offset
    vector[COORD_ORIGIN] = coord_origin
    vector[COORD_STEP] = coord_step
    vector[OUT_SHAPE] = out_shape
    vector[GRID_SHAPE] = displacement.shape[:3]
    vector[OPS] = [factor, scale, shift, clip_intensity, mode, param, amount, clip_noise]
    vector[KEY] = [int(key) >> 32, int(key) & 0xFFFFFFFF]  # each half exact in a float64
    vector[FIRST_INDEX] = first
    padded = np.zeros((grid_size, grid_size, grid_size, 3))
    gz, gy, gx, _ = displacement.shape
    padded[:gz, :gy, :gx] = displacement
    vector[HEADER:] = padded.ravel()
    return vector


def deform_raw(source: torch.Tensor, raw_map: torch.Tensor) -> torch.Tensor:
    """Resample a batch of raw source boxes on their device: ``(B, 1, z, y, x)`` float32.

    Args:
        source: ``(B, sz, sy, sx)`` raw as stored (e.g. uint8), from the sample's
            ``raw_source``.
        raw_map: ``(B, L)`` float64, the sample's ``raw_map`` (``pack_raw_map``).
    """
    outputs = [_deform_one(s, m) for s, m in zip(source, raw_map, strict=True)]
    return torch.stack(outputs)[:, None]


def _deform_one(source: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    device = source.device
    header = vector[:HEADER].double().cpu().numpy()
    out_shape = tuple(int(n) for n in header[OUT_SHAPE])
    positions = _positions(vector, header, out_shape, device)
    size = torch.tensor(source.shape, dtype=torch.float32, device=device)
    grid = (2.0 * positions / (size - 1.0) - 1.0).flip(-1)  # grid_sample wants (x, y, z)
    sampled = torch.nn.functional.grid_sample(
        source.float()[None, None],
        grid[None],
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )[0, 0]
    return _voxel_ops(sampled, header)


def _positions(vector, header, out_shape, device) -> torch.Tensor:
    """Continuous source voxel index of every output voxel, ``(z, y, x, 3)`` float32."""
    gz, gy, gx = (int(n) for n in header[GRID_SHAPE])
    grid_size = round(((len(vector) - HEADER) // 3) ** (1 / 3))
    displacement = vector[HEADER:].reshape(grid_size, grid_size, grid_size, 3)
    displacement = displacement[:gz, :gy, :gx].to(device=device, dtype=torch.float32)
    weights = [
        _catmull_rom_matrix(header[COORD_ORIGIN][a], header[COORD_STEP][a], n, g, device)
        for a, (n, g) in enumerate(zip(out_shape, (gz, gy, gx), strict=True))
    ]
    field = torch.einsum("xk,ijkc->ijxc", weights[2], displacement)
    field = torch.einsum("yj,ijxc->iyxc", weights[1], field)
    field = torch.einsum("zi,iyxc->zyxc", weights[0], field)
    matrix = torch.tensor(header[MATRIX].reshape(3, 3), dtype=torch.float32, device=device)
    offset = torch.tensor(header[OFFSET], dtype=torch.float32, device=device)
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in out_shape]
    index = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return index @ matrix.T + offset + field


def _catmull_rom_matrix(origin, step, n, grid, device) -> torch.Tensor:
    """``(n, grid)`` Catmull-Rom weights of output voxels ``0..n-1`` on the control grid."""
    coords = origin + step * np.arange(n)
    cell = np.floor(coords)
    t = coords - cell
    t2, t3 = t * t, t * t * t
    taps = np.stack(
        [
            (-t3 + 2 * t2 - t) / 2,
            (3 * t3 - 5 * t2 + 2) / 2,
            (-3 * t3 + 4 * t2 + t) / 2,
            (t3 - t2) / 2,
        ],
        axis=-1,
    )
    matrix = np.zeros((n, grid))
    columns = cell.astype(np.int64)[:, None] - 1 + np.arange(4)
    np.add.at(matrix, (np.arange(n)[:, None], columns), taps)
    return torch.tensor(matrix, dtype=torch.float32, device=device)


def _voxel_ops(values: torch.Tensor, header: np.ndarray) -> torch.Tensor:
    """``VoxelOps`` on the device, drawing the same noise as ``counter_rng``."""
    factor, scale, shift, clip_intensity, mode, param, amount, clip_noise = header[OPS]
    values = values * np.float32(factor) * np.float32(scale) + np.float32(shift)
    if clip_intensity:
        values = values.clamp(0.0, 1.0)
    mode = int(mode)
    if mode == 0:
        return values
    key = (int(header[KEY][0]) << 32) | int(header[KEY][1])
    index = int(header[FIRST_INDEX]) + torch.arange(values.numel(), device=values.device)
    index = index.reshape(values.shape)
    if mode == NOISE_SALT_AND_PEPPER:
        u = _uniform(key, index)
        values = torch.where(u < 0.5 * amount, 0.0, torch.where(u < amount, 1.0, values))
    elif mode == NOISE_GAUSSIAN:
        values = values + np.float32(param) * _normal(key, index)
    elif mode == NOISE_POISSON:
        sigma = torch.sqrt(values.clamp(min=0.0) * np.float32(param))
        values = torch.where(values > 0, values + sigma * _normal(key, index), values)
    if clip_noise:
        values = values.clamp(0.0, 1.0)
    return values


def _signed(value: int) -> int:
    return value - 2**64 if value >= 2**63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX_A = _signed(0xBF58476D1CE4E5B9)
_MIX_B = _signed(0x94D049BB133111EB)


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 tensors holding uint64 bit patterns."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _hash64(key: int, index: torch.Tensor) -> torch.Tensor:
    """``counter_rng.hash64`` on int64 tensors (wrapping arithmetic, same bits)."""
    z = _signed(key) + index * _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX_A
    z = (z ^ _shift_right(z, 27)) * _MIX_B
    return z ^ _shift_right(z, 31)


def _uniform(key: int, index: torch.Tensor) -> torch.Tensor:
    return _shift_right(_hash64(key, index), 32).double().mul(1.0 / 2**32).float()


def _normal(key: int, index: torch.Tensor) -> torch.Tensor:
    bits = _hash64(key, index >> 1)
    part = _shift_right(bits, 32) * (index & 1) + (bits & 0xFFFFFFFF) * (1 - (index & 1))
    b = part >> (32 - TABLE_BITS)
    fraction = (part & ((1 << (32 - TABLE_BITS)) - 1)).float() / float(1 << (32 - TABLE_BITS))
    table = torch.from_numpy(QUANTILES_32).to(index.device)
    value = table[b] + fraction * (table[b + 1] - table[b])
    tails = (b == 0) | (b == _BINS - 1)
    if tails.any():
        # about one voxel in 2048: drawn exactly, on the CPU, as counter_rng draws them
        exact = normals_at(np.uint64(key), index[tails].cpu().numpy())
        value[tails] = torch.from_numpy(exact).to(device=value.device, dtype=value.dtype)
    return value
