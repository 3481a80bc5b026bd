"""A raw/gt/mask pipeline over hand-made arrays, for testing the section filter nodes."""

from __future__ import annotations

from collections.abc import Iterable

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate
from funlib.persistence import Array

RAW = gp.ArrayKey("RAW")
GT = gp.ArrayKey("GT")
MASK = gp.ArrayKey("MASK")


def labels_for(raw: np.ndarray) -> dict[gp.ArrayKey, np.ndarray]:
    """Raw with random gt and mask of raw's spatial shape (the arrays a filter must keep)."""
    rng = np.random.default_rng(1)
    shape = raw.shape[-3:]
    return {
        RAW: raw,
        GT: rng.integers(0, 5, shape).astype(np.uint64),
        MASK: rng.integers(0, 2, shape).astype(np.uint8),
    }


def run(
    node: gp.BatchFilter, seeds: Iterable[int], raw: np.ndarray, voxel_size=(1, 1, 1)
) -> list[gp.Batch]:
    """Request raw, gt and mask whole through ``node``, once per seed."""
    voxel_size = Coordinate(voxel_size)
    sources = labels_for(raw)
    arrays = {
        key: Array(data, offset=(0, 0, 0), voxel_size=voxel_size) for key, data in sources.items()
    }
    pipeline = tuple(gp.ArraySource(key, array) for key, array in arrays.items())
    pipeline = pipeline + gp.MergeProvider() + node
    batches = []
    with gp.build(pipeline):
        for seed in seeds:
            request = gp.BatchRequest(random_seed=seed)
            for key, array in arrays.items():
                request[key] = gp.ArraySpec(roi=array.roi)
            batches.append(pipeline.request_batch(request))
    return batches


def assert_labels_kept(batch: gp.Batch, raw: np.ndarray) -> None:
    """gt and mask came through unchanged."""
    sources = labels_for(raw)
    np.testing.assert_array_equal(batch[GT].data, sources[GT])
    np.testing.assert_array_equal(batch[MASK].data, sources[MASK])
