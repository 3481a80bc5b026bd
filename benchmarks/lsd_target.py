"""Cost of the LSD target per sample (not a test).

Draws 40^3-voxel output regions of synthetic cells (Voronoi cells, 8 nm voxels) and times
``LsdTarget`` (with its context) against ``AffinityTarget`` on the same requests, for each
sigma and downsampling factor. With ``--lsds DIR`` (a directory where the PyPI package
``lsds`` is installed, e.g. ``pip install --no-deps --target DIR lsds``) it also reports
how far voltrain's descriptors are from that package's on the same regions.

    python benchmarks/lsd_target.py [--samples 10] [--sigma 40 80] [--downsample 1 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array, open_ds

from voltrain.nodes.affinity_target import AffinityTarget
from voltrain.nodes.lsd_target import LsdTarget, local_shape_descriptors, lsd_context
from voltrain.synthetic import make_synthetic_volume

VOXEL_SIZE = Coordinate((8, 8, 8))
OUTPUT = Coordinate((40, 40, 40))
GT, TARGET, WEIGHT = gp.ArrayKey("BENCH_GT"), gp.ArrayKey("BENCH_T"), gp.ArrayKey("BENCH_W")


def time_node(labels: np.ndarray, node: gp.BatchFilter, rois: list[Roi]) -> float:
    """Milliseconds per request of ``node`` over ``labels`` (reading excluded)."""
    source = gp.ArraySource(GT, Array(labels, (0, 0, 0), VOXEL_SIZE), interpolatable=False)
    pipeline = source + gp.Pad(GT, None) + node
    seconds = 0.0
    with gp.build(pipeline):
        for roi in rois:
            request = gp.BatchRequest()
            request[TARGET] = gp.ArraySpec(roi=roi)
            request[WEIGHT] = gp.ArraySpec(roi=roi)
            start = time.perf_counter()
            pipeline.request_batch(request)
            seconds += time.perf_counter() - start
    return 1000 * seconds / len(rois)


def compare_with_lsds(labels, rois, sigma, downsample) -> str:
    """Max and mean |voltrain - lsds| over the foreground of the regions, and lsds's time
    per region (computed on the same context-enlarged labels)."""
    from lsd.train.local_shape_descriptor import get_local_shape_descriptors

    # lsds needs the output's offset in the region to be a multiple of the downsampling
    context = lsd_context([sigma] * 3, VOXEL_SIZE, (downsample,) * 3)
    context = Coordinate(-(-c // downsample) * downsample for c in context)
    errors = []
    seconds = 0.0
    for roi in rois:
        begin = roi.begin / VOXEL_SIZE - context
        region = labels[
            tuple(slice(b, b + s) for b, s in zip(begin, OUTPUT + context * 2, strict=True))
        ]
        inside = tuple(slice(c, c + s) for c, s in zip(context, OUTPUT, strict=True))
        ours = local_shape_descriptors(region, VOXEL_SIZE, [sigma] * 3, inside, downsample)
        start = time.perf_counter()
        theirs = get_local_shape_descriptors(
            region,
            (sigma,) * 3,
            voxel_size=VOXEL_SIZE,
            roi=gp.Roi(context, OUTPUT),
            downsample=downsample,
        )
        seconds += time.perf_counter() - start
        errors.append(np.abs(ours - theirs)[:, region[inside] != 0])
    error = np.concatenate(errors, axis=1)
    lsds_ms = 1000 * seconds / len(rois)
    return f"max {error.max():.2e}, mean {error.mean():.2e}; lsds {lsds_ms:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--sigma", type=float, nargs="+", default=[40.0, 80.0])
    parser.add_argument("--downsample", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cells", type=int, default=200, help="cells in the 128^3 volume")
    parser.add_argument("--lsds", help="directory holding the lsds package, to compare")
    args = parser.parse_args()
    if args.lsds:
        sys.path.append(args.lsds)
    with tempfile.TemporaryDirectory() as work:
        make_synthetic_volume(Path(work) / "cells.zarr", num_cells=args.cells)
        labels = open_ds(str(Path(work) / "cells.zarr" / "labels"))[:].astype(np.uint64)
    rng = np.random.default_rng(0)
    # regions whose windows stay inside the volume, so that lsds sees the same context
    margin = max(
        max(lsd_context([s] * 3, VOXEL_SIZE, (d,) * 3)) + d
        for s in args.sigma
        for d in args.downsample
    )
    rois = [
        Roi(
            Coordinate(rng.integers(margin, 128 - 40 - margin, 3)) * VOXEL_SIZE, OUTPUT * VOXEL_SIZE
        )
        for _ in range(args.samples)
    ]
    affinities = AffinityTarget(GT, None, TARGET, WEIGHT, [[-1, 0, 0], [0, -1, 0], [0, 0, -1]])
    print(f"{args.samples} samples of 40^3 voxels (8 nm), {args.cells} cells in 128^3")
    print(f"affinities (3 offsets):           {time_node(labels, affinities, rois):7.1f} ms")
    for sigma in args.sigma:
        for downsample in args.downsample:
            node = LsdTarget(GT, None, TARGET, WEIGHT, [sigma] * 3, downsample)
            line = f"lsd sigma {sigma:g} nm, downsample {downsample}: "
            line += f"{time_node(labels, node, rois):7.1f} ms"
            if args.lsds:
                line += "; vs lsds " + compare_with_lsds(labels, rois[:3], sigma, downsample)
            print(line, flush=True)


if __name__ == "__main__":
    main()
