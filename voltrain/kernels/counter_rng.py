"""Per-voxel random numbers from a hash of (seed, voxel index), drawn in any order.

A counter-based generator needs no state: the value of voxel ``n`` is a function of
``(seed, n)`` alone. The fused resampling kernel draws a voxel's noise while it writes that
voxel, in whatever order it visits the output, and ``NoiseAugment`` on its own draws the
same values: the two paths agree bit for bit.

Normal deviates come from the inverse CDF: each half of a 64-bit hash makes one (voxels
``2m`` and ``2m + 1`` share the hash of ``m``); 12 bits pick one of 4096 equal-probability
bins, the other 20 a position inside it. The 4094 inner bins are spanned linearly between
exact normal quantiles, so the distribution matches the normal at every bin edge (the CDF
is off by less than 2e-5 in between); the two outer bins (|z| > 3.49, probability 1/2048)
are drawn exactly by Marsaglia's tail method. This costs about 2 ns a voxel, a fifth of
``Generator.standard_normal``.

The resampling kernels inline these functions; their numba cache is stamped with every
kernel file (``voltrain.kernels.numba_cache``), so an edit here recompiles them too.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy.special import ndtri

TABLE_BITS = 12
_BINS = 1 << TABLE_BITS
# Normal quantiles at k / 4096; the infinite ends are never read (tails are drawn apart).
QUANTILES = ndtri(np.arange(_BINS + 1) / _BINS)
QUANTILES[0], QUANTILES[-1] = QUANTILES[1], QUANTILES[-2]
QUANTILES_32 = QUANTILES.astype(np.float32)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_A = np.uint64(0xBF58476D1CE4E5B9)
_MIX_B = np.uint64(0x94D049BB133111EB)
_TAIL_STREAM = np.uint64(0xD1B54A32D192ED03)
_INV_2_32 = 1.0 / 4294967296.0
_LOW_32 = np.uint64(0xFFFFFFFF)
_FRACTION_MASK = np.uint64((1 << (32 - TABLE_BITS)) - 1)
_INV_FRACTION = np.float32(1.0 / (1 << (32 - TABLE_BITS)))

NOISE_NONE, NOISE_GAUSSIAN, NOISE_POISSON, NOISE_SALT_AND_PEPPER = 0, 1, 2, 3
NOISE_MODE_CODES = {
    "gaussian": NOISE_GAUSSIAN,
    "poisson": NOISE_POISSON,
    "s&p": NOISE_SALT_AND_PEPPER,
}


def seed_key(seed: int) -> np.uint64:
    """The uint64 key the kernels take for an integer seed."""
    return np.uint64(int(seed) % 2**64)


@njit(cache=True)
def hash64(key, index):
    """splitmix64 of ``key + index * golden``: 64 well-mixed bits for voxel ``index``."""
    z = key + np.uint64(index) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX_A
    z = (z ^ (z >> np.uint64(27))) * _MIX_B
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def uniform(key, index):
    """A uniform deviate in [0, 1) for voxel ``index`` (32 bits of resolution)."""
    return float(hash64(key, index) >> np.uint64(32)) * _INV_2_32


@njit(cache=True)
def normal(key, index):
    """A standard normal deviate for voxel ``index`` (see the module docstring)."""
    bits = hash64(key, index >> 1)
    return _normal_from_bits((bits >> np.uint64(32 * (index & 1))) & _LOW_32, key, index)


@njit(cache=True)
def normals_at(key, indices):
    """``normal(key, i)`` for every ``i`` in ``indices`` (float32)."""
    out = np.empty(indices.shape[0], dtype=np.float32)
    for n in range(indices.shape[0]):
        out[n] = normal(key, indices[n])
    return out


@njit(cache=True, fastmath={"contract"})
def _normal_from_bits(part, key, index):
    # QUANTILES_32 is read as a global: numba freezes it into the code, whereas an array
    # argument would cost a reference-count update on every call
    b = np.int64(part >> np.uint64(32 - TABLE_BITS))
    fraction = np.float32(np.int64(part & _FRACTION_MASK)) * _INV_FRACTION
    value = QUANTILES_32[b] + fraction * (QUANTILES_32[b + 1] - QUANTILES_32[b])
    if b == 0 or b == _BINS - 1:
        value = np.float32(_tail(key, index, QUANTILES[_BINS - 1], b == 0))
    return value


@njit(cache=True)
def _tail(key, index, r, negative):
    # Marsaglia (1964): exact draw from the normal beyond r, from a separate stream
    stream = hash64(key ^ _TAIL_STREAM, index)
    for attempt in range(1000):
        u1 = 1.0 - uniform(stream, 2 * attempt)
        u2 = 1.0 - uniform(stream, 2 * attempt + 1)
        x = -math.log(u1) / r
        y = -math.log(u2)
        if 2.0 * y > x * x:
            return -(r + x) if negative else r + x
    return -r if negative else r


@njit(cache=True)
def add_noise_row(values, out, key, first_index, mode, param, amount, clip):
    """``out[i] = values[i]`` plus the noise of index ``first_index + i``; may be in place.

    ``param`` is the standard deviation for gaussian noise and the variance at 1 for
    poisson noise. One loop per mode: a mode test inside the loop halves the speed.
    """
    n = values.shape[0]
    if mode == NOISE_GAUSSIAN:
        sigma = np.float32(param)
        i = 0
        while i < n:
            index = first_index + i
            if (index & 1) == 0 and i + 1 < n:
                # one hash makes the noise of two voxels
                bits = hash64(key, index >> 1)
                z0 = _normal_from_bits(bits & _LOW_32, key, index)
                z1 = _normal_from_bits(bits >> np.uint64(32), key, index + 1)
                out[i] = _clipped(values[i] + sigma * z0, clip)
                out[i + 1] = _clipped(values[i + 1] + sigma * z1, clip)
                i += 2
            else:
                out[i] = _clipped(values[i] + sigma * normal(key, index), clip)
                i += 1
    elif mode == NOISE_POISSON:
        for i in range(n):
            value = values[i]
            if value > 0.0:
                value = value + math.sqrt(value * param) * normal(key, first_index + i)
            out[i] = _clipped(value, clip)
    elif mode == NOISE_SALT_AND_PEPPER:
        for i in range(n):
            u = uniform(key, first_index + i)
            value = values[i]
            if u < 0.5 * amount:
                value = 0.0
            elif u < amount:
                value = 1.0
            out[i] = _clipped(value, clip)
    else:
        for i in range(n):
            out[i] = _clipped(values[i], clip)


@njit(cache=True)
def _clipped(value, clip):
    if clip:
        return min(max(value, np.float32(0.0)), np.float32(1.0))
    return value


def add_noise(
    data: np.ndarray, seed: int, mode: str, var: float, amount: float, clip: bool
) -> np.ndarray:
    """A noisy copy of float ``data``; voxel ``n`` (C order) gets noise ``f(seed, n)``.

    ``mode`` is ``"gaussian"`` (variance ``var``), ``"poisson"`` (variance ``raw * var``)
    or ``"s&p"`` (a fraction ``amount`` set to 0 or 1).
    """
    code = NOISE_MODE_CODES[mode]
    var_or_sigma = math.sqrt(var) if code == NOISE_GAUSSIAN else var
    source = np.ascontiguousarray(data)
    out = np.empty_like(source)
    add_noise_row(
        source.reshape(-1), out.reshape(-1), seed_key(seed), 0, code, var_or_sigma, amount, clip
    )
    return out
