"""Affinities without learning: what raw intensity alone says about boundaries.

The yardstick a trained model has to beat. Membranes in EM are dark, so two neighbouring
voxels are taken to belong together as much as the darker of the two is bright:
``affinity(v, v + offset) = min(I(v), I(v + offset))``, with ``I`` the raw, smoothed a little
against noise and scaled to [0, 1] between robust percentiles. Anything dark (membranes,
but also mitochondria, vesicles, missing sections) is a boundary to it; learning should
tell them apart. The affinities have voltrain's layout and convention (``task.neighborhood``
offsets, channel ``c`` at ``v`` pairs ``v`` with ``v + offset_c``), so they go through the
same segmentation step as a network's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from voltrain.errors import DataError

SMOOTHING_NM = 8.0
PERCENTILES = (1.0, 99.0)


def normalised_intensity(
    raw: np.ndarray,
    voxel_size: Sequence[float],
    smoothing_nm: float = SMOOTHING_NM,
    percentiles: tuple[float, float] = PERCENTILES,
) -> np.ndarray:
    """``raw`` smoothed by a Gaussian of ``smoothing_nm`` (world units) and scaled to [0, 1].

    The scale maps the ``percentiles`` of the smoothed raw to 0 and 1, so a few saturated or
    blank voxels do not set it.
    """
    if raw.ndim != len(voxel_size):
        raise DataError(f"raw has {raw.ndim} dimensions but voxel size {tuple(voxel_size)}")
    sigma = [smoothing_nm / float(size) for size in voxel_size]
    smooth = ndimage.gaussian_filter(raw.astype(np.float32), sigma) if smoothing_nm > 0 else raw
    low, high = np.percentile(smooth, percentiles)
    if high <= low:
        return np.zeros(raw.shape, dtype=np.float32)
    return np.clip((smooth - low) / (high - low), 0.0, 1.0).astype(np.float32)


def intensity_affinities(
    raw: np.ndarray,
    neighborhood: Sequence[Sequence[int]],
    voxel_size: Sequence[float],
    smoothing_nm: float = SMOOTHING_NM,
) -> np.ndarray:
    """Float32 (C, z, y, x) affinities in [0, 1] from raw intensity, one channel per offset.

    Channel ``c`` at voxel ``v`` is ``min(I(v), I(v + offset_c))`` of the normalised
    intensity ``I`` (``normalised_intensity``); where ``v + offset_c`` lies outside the
    volume it is ``I(v)``.
    """
    intensity = normalised_intensity(raw, voxel_size, smoothing_nm)
    affinities = np.empty((len(neighborhood), *raw.shape), dtype=np.float32)
    for channel, offset in enumerate(neighborhood):
        if len(offset) != raw.ndim:
            raise DataError(f"offset {list(offset)} does not fit raw of {raw.ndim} dimensions")
        np.minimum(intensity, _neighbour(intensity, offset), out=affinities[channel])
    return affinities


def _neighbour(values: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    """``values[v + offset]`` at every ``v``; ``values[v]`` itself where that is outside."""
    shifted = values.copy()
    target, source = [], []
    for step, size in zip(offset, values.shape, strict=True):
        step = int(step)
        if abs(step) >= size:
            return shifted
        target.append(slice(max(0, -step), size - max(0, step)))
        source.append(slice(max(0, step), size - max(0, -step)))
    shifted[tuple(target)] = values[tuple(source)]
    return shifted
