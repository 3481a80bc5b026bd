"""Segmentation speed and quality on synthetic cells (not a test).

Generates Voronoi cells, turns their labels into affinities with Gaussian noise, and runs
``segment_array`` in memory and ``voltrain segment`` blockwise with each worker count.
Prints voxels/s (end to end, worker start-up included) and the VOI and ARAND of each
threshold against the cells, so a change that makes it faster but worse shows.

    python benchmarks/segment.py [DIR] [--size 96] [--block 32] [--workers 1 2] [--noise 0.2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from funlib.persistence import open_ds, prepare_ds

from voltrain.blocks.run import BlockRunOptions
from voltrain.evaluate import evaluate_segmentation
from voltrain.segment import SegmentConfig, segment_array
from voltrain.segment.blockwise import segment
from voltrain.synthetic import make_synthetic_volume

NEIGHBORHOOD = [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]
THRESHOLDS = [0.3, 0.5, 0.7]


def noisy_affinities(labels: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    """Affinities of ``labels`` (1 inside a cell, 0 across boundaries) plus noise."""
    affinities = np.zeros((3, *labels.shape), dtype=np.float32)
    for channel, offset in enumerate(NEIGHBORHOOD):
        axis = offset.index(-1)
        same = labels[tuple(slice(1, None) if a == axis else slice(None) for a in range(3))]
        before = labels[tuple(slice(None, -1) if a == axis else slice(None) for a in range(3))]
        target = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
        affinities[channel][target] = (same == before) & (same != 0)
    rng = np.random.default_rng(seed)
    return np.clip(affinities + rng.normal(0, noise, affinities.shape), 0, 1).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir", nargs="?", help="work directory (default: a temporary one)")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--noise", type=float, default=0.2)
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="voltrain-segment-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cells = make_synthetic_volume(work / "cells.zarr", shape=(args.size,) * 3, num_cells=60)
    labels = open_ds(str(work / "cells.zarr" / "labels"))[:].astype(np.uint64)
    del cells
    affinities = noisy_affinities(labels, args.noise)
    voxels = labels.size
    array = prepare_ds(
        str(work / "cells.zarr" / "affs"),
        shape=affinities.shape,
        voxel_size=(8, 8, 8),
        axis_names=["c^", "z", "y", "x"],
        types=["channel", "space", "space", "space"],
        dtype=np.float32,
    )
    array[array.roi] = affinities

    start = time.perf_counter()
    config = SegmentConfig(block_shape=[args.block] * 3)
    in_memory = segment_array(affinities, NEIGHBORHOOD, THRESHOLDS, config=config)
    seconds = time.perf_counter() - start
    print(f"segment_array, {args.size}^3 voxels: {voxels / seconds:,.0f} voxels/s")
    for threshold, segmentation in in_memory.items():
        scores = evaluate_segmentation(segmentation, labels)
        print(
            f"  threshold {threshold}: VOI split {scores['voi_split']:.3f} merge "
            f"{scores['voi_merge']:.3f}, ARAND {scores['arand']:.3f}"
        )

    experiment = {
        "data": {"train": [{"raw": "x.zarr/raw", "gt": "x.zarr/gt"}]},
        "task": {"type": "affinities"},
        "trainer": {"input_shape": [44, 44, 44]},
        "segment": {"block_shape": [args.block] * 3, "thresholds": THRESHOLDS},
    }
    (work / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    for workers in args.workers:
        output = work / f"seg_{workers}.zarr" / "seg"
        options = BlockRunOptions(workers=workers, progress=False)
        result = segment(
            str(work / "experiment.yaml"),
            str(work / "cells.zarr" / "affs"),
            str(output),
            options=options,
        )
        same = all(
            np.array_equal(open_ds(path)[:], in_memory[t]) for t, path in result.outputs.items()
        )
        print(
            f"voltrain segment, {workers} worker(s), {result.blocks} blocks: "
            f"{result.voxels_per_second:,.0f} voxels/s, equal to segment_array: {same}"
        )


if __name__ == "__main__":
    main()
