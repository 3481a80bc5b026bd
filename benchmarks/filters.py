"""Per-sample cost of the blur, contrast and cutout augments at the reference size.

Applies each augment node (its ``make_params`` and ``apply_transform``, what a loader
worker runs for it) to a 132^3 float32 raw sample, the reference pipeline's input
(benchmarks/pipeline.py), at 8 nm isotropic and at 40x4x4 nm serial-section EM, and prints
the median milliseconds per sample over ``--samples`` seeds, on one core.

    OMP_NUM_THREADS=1 python benchmarks/filters.py [--samples 10]
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import gunpowder as gp  # noqa: E402
import numpy as np  # noqa: E402
from funlib.geometry import Coordinate  # noqa: E402
from scipy import ndimage  # noqa: E402

from voltrain.augments import parse_augment  # noqa: E402
from voltrain.kernels.augment_rng import augment_rng  # noqa: E402
from voltrain.nodes.raw_section_augment import SampleGeometry  # noqa: E402

SHAPE = Coordinate(132, 132, 132)
KEYS = (gp.ArrayKey("RAW"), gp.ArrayKey("GT"), gp.ArrayKey("MASK"))
# name -> (augment config, voxel size); lengths in nm
CASES = {
    "blur gaussian, 10% of sections": ({"type": "blur", "sigma_min": 8, "sigma_max": 24}, "em"),
    "blur gaussian, every section": (
        {"type": "blur", "sigma_min": 8, "sigma_max": 24, "section_probability": 1.0},
        "em",
    ),
    "blur gaussian 3D": (
        {"type": "blur", "sigma_min": 8, "sigma_max": 24, "per_section": False},
        "iso",
    ),
    "blur motion, 10% of sections": (
        {"type": "blur", "mode": "motion", "length_min": 16, "length_max": 64},
        "em",
    ),
    "blur motion, every section": (
        {
            "type": "blur",
            "mode": "motion",
            "length_min": 16,
            "length_max": 64,
            "section_probability": 1.0,
        },
        "em",
    ),
    "contrast scale, every section": ({"type": "contrast"}, "em"),
    "contrast scale, whole sample": ({"type": "contrast", "per_section": False}, "em"),
    "contrast clahe, every section": ({"type": "contrast", "mode": "clahe"}, "em"),
    "contrast clahe, 10% of sections": (
        {"type": "contrast", "mode": "clahe", "section_probability": 0.1},
        "em",
    ),
    "contrast clahe 3D": ({"type": "contrast", "mode": "clahe", "per_section": False}, "iso"),
    "cutout box zero, 10% of sections": (
        {"type": "cutout", "size_min": 40, "size_max": 160},
        "em",
    ),
    "cutout blob noise, 10% of sections": (
        {"type": "cutout", "size_min": 40, "size_max": 160, "shape": "blob", "fill": "noise"},
        "em",
    ),
    "cutout box mean 3D, 1-3 boxes": (
        {"type": "cutout", "size_min": 80, "size_max": 320, "per_section": False, "fill": "mean"},
        "iso",
    ),
}
VOXEL_SIZES = {"iso": Coordinate(8, 8, 8), "em": Coordinate(40, 4, 4)}


def texture() -> np.ndarray:
    """EM-like float32 raw in [0, 1]: smoothed noise (membranes and blobs at a few voxels)."""
    noise = np.random.default_rng(0).standard_normal(tuple(SHAPE)).astype(np.float32)
    smooth = ndimage.gaussian_filter(noise, 2.0)
    return ((smooth - smooth.min()) / (smooth.max() - smooth.min())).astype(np.float32)


def time_case(config: dict, voxel_size: Coordinate, raw: np.ndarray, samples: int) -> float:
    """Median ms per sample of drawing the parameters and applying them."""
    node = parse_augment(config).node(*KEYS)
    geometry = SampleGeometry(SHAPE, voxel_size)
    times = []
    for seed in range(samples):
        start = time.perf_counter()
        params = node.make_params(augment_rng(seed, node.rng_stream), geometry)
        node.apply_transform(raw, params)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10, help="seeds per case")
    args = parser.parse_args()
    raw = texture()
    print(f"132^3 float32 raw, median of {args.samples} samples, one core")
    print(f"{'augment':40s} {'voxel size':>12s} {'ms/sample':>10s}")
    for name, (config, grid) in CASES.items():
        voxel_size = VOXEL_SIZES[grid]
        ms = time_case(config, voxel_size, raw, args.samples)
        print(f"{name:40s} {'x'.join(map(str, voxel_size)):>12s} {ms:10.1f}")


if __name__ == "__main__":
    main()
