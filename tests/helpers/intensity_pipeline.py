"""A tiny raw/gt/mask pipeline for testing the nodes that change raw's intensities."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate
from funlib.persistence import Array

RAW = gp.ArrayKey("RAW")
GT = gp.ArrayKey("GT")
MASK = gp.ArrayKey("MASK")
SHAPE = (4, 6, 6)
VOXEL_SIZE = Coordinate(40, 4, 4)
_rng = np.random.default_rng(0)
SOURCES = {
    RAW: _rng.uniform(0.25, 0.75, SHAPE).astype(np.float32),
    GT: _rng.integers(0, 5, SHAPE).astype(np.uint64),
    MASK: _rng.integers(0, 2, SHAPE).astype(np.uint8),
}


def run(node: gp.BatchFilter, seeds) -> list[gp.Batch]:
    sources = tuple(
        gp.ArraySource(key, Array(data, offset=(0, 0, 0), voxel_size=VOXEL_SIZE))
        for key, data in SOURCES.items()
    )
    pipeline = sources + gp.MergeProvider() + node
    batches = []
    with gp.build(pipeline):
        for seed in seeds:
            request = gp.BatchRequest(random_seed=seed)
            for key in SOURCES:
                request.add(key, Coordinate(SHAPE) * VOXEL_SIZE)
            batches.append(pipeline.request_batch(request))
    return batches
