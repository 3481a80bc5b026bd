"""The stock-gunpowder side of the reference pipeline (see BENCHMARK.md).

Builds the pipeline DaCapo would build with gunpowder 1.5 nodes only, and times it:

    ArraySource x3 -> MergeProvider -> Normalize(raw) -> Pad(raw, None)
    -> RandomLocation(min_masked=0.5, mask) -> DeformAugment -> SimpleAugment
    -> IntensityAugment -> NoiseAugment -> AddAffinities

Run as a script to generate the reference volume and print samples/s and ms per stage:

    OMP_NUM_THREADS=1 python benchmarks/stock_gunpowder.py [DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import gunpowder as gp
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds
from gunpowder.profiling import Timing

RAW_SHAPE_VOXELS = Coordinate(132, 132, 132)
OUTPUT_SHAPE_VOXELS = Coordinate(44, 44, 44)
MIN_MASKED = 0.5
CONTROL_POINT_SPACING = Coordinate(80, 80, 80)
JITTER_SIGMA = (16.0, 16.0, 16.0)
AFFINITY_NEIGHBORHOOD = [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]
# The serial-section variant (``sections=True``), the same work on both sides: each z
# section of raw goes missing or loses contrast (x 0.1) with 5% probability each, and about
# one section per sample slips in-plane, by a shift with a spread of about 20 nm per axis.
SECTION_PROB_MISSING = 0.05
SECTION_PROB_LOW_CONTRAST = 0.05
SECTION_CONTRAST = 0.1
SLIP_SIGMA_NM = 20.0  # stock: gaussian sigma per axis (ShiftAugment, per-section events)
SLIP_MAX_NM = 32.0  # voltrain: uniform on the 8 nm grid in [-32, 32], std 20.7 nm
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# Which BENCHMARK.md stage each gunpowder node's time counts towards. There is no "transfer"
# stage here: stock gunpowder hands numpy arrays to the caller in the same process.
STAGE_OF_NODE = {
    "TimedArraySource": "read",
    "Normalize": "read",
    "Pad": "read",
    "RandomLocation": "sample",
    "DeformAugment": "deform",
    "SimpleAugment": "mirror",
    "IntensityAugment": "intensity",
    "NoiseAugment": "noise",
    "AddAffinities": "target",
    "ShiftAugment": "other",
    "DefectAugment": "other",
}


class TimedArraySource(gp.ArraySource):
    """A stock ArraySource that also records its read time in the batch's profiling stats.

    gunpowder times BatchFilters but not sources, so without this the read time would only
    show up as the remainder of the wall time.

    Args:
        key: the array key to provide.
        array: the funlib.persistence array to read from.
        interpolatable: whether DeformAugment may interpolate the array linearly.
    """

    def provide(self, request: gp.BatchRequest) -> gp.Batch:
        timing = Timing(self, "provide")
        timing.start()
        batch = super().provide(request)
        timing.stop()
        batch.profiling_stats.add(timing)
        return batch


def build_stock_pipeline(
    container: str, mask_dataset: str = "mask", sections: bool = False
) -> tuple[gp.Pipeline, gp.BatchRequest, dict[str, gp.ArrayKey]]:
    """Build the stock pipeline over ``container``'s raw/labels/``mask_dataset`` datasets.

    Returns the pipeline (not yet built), one sample's request (raw 132^3 voxels; labels, mask,
    affinities and their mask 44^3 voxels, centred) and the array keys by name. With
    ``sections``, a ShiftAugment (slips) and a DefectAugment (missing and low-contrast
    sections) follow NoiseAugment.
    """
    keys = {
        name: gp.ArrayKey(name.upper())
        for name in ("raw", "labels", "mask", "affinities", "affinities_mask")
    }
    raw = open_ds(str(Path(container) / "raw"))
    labels = open_ds(str(Path(container) / "labels"))
    mask = open_ds(str(Path(container) / mask_dataset))

    # DaCapo leaves `interpolatable` unset, which makes DeformAugment resample uint8 raw with
    # nearest neighbour; raw is marked interpolatable so both benchmark sides interpolate raw
    # linearly and labels/mask by nearest neighbour.
    sources = (
        TimedArraySource(keys["raw"], raw, interpolatable=True),
        TimedArraySource(keys["labels"], labels, interpolatable=False),
        TimedArraySource(keys["mask"], mask, interpolatable=False),
    )
    pipeline = (
        sources
        + gp.MergeProvider()
        + gp.Normalize(keys["raw"])
        + gp.Pad(keys["raw"], None)
        + gp.RandomLocation(min_masked=MIN_MASKED, mask=keys["mask"])
        + gp.DeformAugment(
            control_point_spacing=CONTROL_POINT_SPACING,
            jitter_sigma=JITTER_SIGMA,
            rotate=True,
        )
        + gp.SimpleAugment()
        + gp.IntensityAugment(keys["raw"], 0.9, 1.1, -0.1, 0.1)
        + gp.NoiseAugment(keys["raw"], var=0.01)
    )
    if sections:
        # one expected slip per sample among the 132 sections of raw
        pipeline += gp.ShiftAugment(prob_slip=1 / 132, sigma=SLIP_SIGMA_NM, shift_axis=0)
        pipeline += gp.DefectAugment(
            keys["raw"],
            prob_missing=SECTION_PROB_MISSING,
            prob_low_contrast=SECTION_PROB_LOW_CONTRAST,
            contrast_scale=SECTION_CONTRAST,
        )
    pipeline += gp.AddAffinities(
        AFFINITY_NEIGHBORHOOD,
        keys["labels"],
        keys["affinities"],
        labels_mask=keys["mask"],
        affinities_mask=keys["affinities_mask"],
    )

    voxel_size = raw.voxel_size
    raw_roi = Roi((0, 0, 0), RAW_SHAPE_VOXELS * voxel_size)
    context = (RAW_SHAPE_VOXELS - OUTPUT_SHAPE_VOXELS) / 2 * voxel_size
    output_roi = raw_roi.grow(-context, -context)
    request = gp.BatchRequest()
    request[keys["raw"]] = gp.ArraySpec(roi=raw_roi)
    for name in ("labels", "mask", "affinities", "affinities_mask"):
        request[keys[name]] = gp.ArraySpec(roi=output_roi)
    return pipeline, request, keys


def time_stock(
    container: str | Path,
    num_samples: int,
    warmup: int = 1,
    time_limit_s: float | None = None,
    mask_dataset: str = "mask",
) -> dict:
    """Time ``num_samples`` samples of the stock pipeline after ``warmup`` untimed ones.

    Without ``time_limit_s`` the samples are drawn in this process, and ``peak_rss_mb`` is this
    process's peak so far. With it, they are drawn in a spawned child process with one BLAS/OMP
    thread, killed when the limit (wall clock, including the child's start and the pipeline
    build) runs out; the result is then ``{"timed_out": True, "samples_done": ...}``.

    Returns:
        ``timed_out``, ``samples_per_s``, ``ms_per_sample``, ``ms_per_node`` (from gunpowder's
        profiling stats, mean per sample), ``ms_per_stage`` (nodes grouped by BENCHMARK.md
        stage, plus ``other``: wall time no node accounts for), ``setup_s`` (build, including
        RandomLocation's mask integral) and ``peak_rss_mb``.
    """
    if time_limit_s is None:
        return _sample_and_time(str(container), mask_dataset, num_samples, warmup)
    return _time_in_child(str(container), mask_dataset, num_samples, warmup, time_limit_s)


def seeded_request(request: gp.BatchRequest, seed: int) -> gp.BatchRequest:
    """A copy of ``request`` with ``seed`` as its random seed."""
    # gunpowder reseeds `random` and `np.random` from the request; a fixed seed per sample
    # makes both runs of a comparison see the same sequence of requests.
    seeded = gp.BatchRequest(random_seed=seed)
    for key, spec in request.items():
        seeded[key] = spec.copy()
    return seeded


def _sample_and_time(
    container: str,
    mask_dataset: str,
    num_samples: int,
    warmup: int,
    on_sample: Callable[[int], None] | None = None,
) -> dict:
    pipeline, request, keys = build_stock_pipeline(container, mask_dataset)
    build_start = time.perf_counter()
    with gp.build(pipeline):
        setup_s = time.perf_counter() - build_start
        for seed in range(warmup):
            pipeline.request_batch(seeded_request(request, seed))
        node_s: dict[str, float] = defaultdict(float)
        start = time.perf_counter()
        for index in range(num_samples):
            batch = pipeline.request_batch(seeded_request(request, warmup + index))
            for (node, _method), summary in batch.profiling_stats.get_timing_summaries().items():
                node_s[node] += sum(summary.times)
            if on_sample is not None:
                on_sample(index + 1)
        total_s = time.perf_counter() - start

    ms_per_node = {node: 1000 * s / num_samples for node, s in sorted(node_s.items())}
    ms_per_stage: dict[str, float] = defaultdict(float)
    for node, ms in ms_per_node.items():
        ms_per_stage[STAGE_OF_NODE.get(node, "other")] += ms
    ms_per_sample = 1000 * total_s / num_samples
    ms_per_stage["other"] += ms_per_sample - sum(ms_per_node.values())
    return {
        "timed_out": False,
        "num_samples": num_samples,
        "warmup": warmup,
        "samples_per_s": num_samples / total_s,
        "ms_per_sample": ms_per_sample,
        "ms_per_node": ms_per_node,
        "ms_per_stage": dict(ms_per_stage),
        "setup_s": setup_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "affinities_shape": tuple(batch[keys["affinities"]].data.shape),
    }


def _child_main(connection, container: str, mask_dataset: str, num_samples: int, warmup: int):
    try:
        result = _sample_and_time(
            container,
            mask_dataset,
            num_samples,
            warmup,
            on_sample=lambda done: connection.send(("progress", done)),
        )
        connection.send(("result", result))
    except BaseException:
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


def _start_single_threaded(child: multiprocessing.process.BaseProcess) -> None:
    # A spawned child copies the environment when it starts, before it imports numpy, so the
    # thread limits reach it without changing this process's environment for good.
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))
    try:
        child.start()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _time_in_child(
    container: str, mask_dataset: str, num_samples: int, warmup: int, time_limit_s: float
) -> dict:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_child_main,
        args=(sender, container, mask_dataset, num_samples, warmup),
        daemon=True,
    )
    deadline = time.monotonic() + time_limit_s
    _start_single_threaded(child)
    sender.close()

    samples_done = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not receiver.poll(remaining):
                return {
                    "timed_out": True,
                    "time_limit_s": time_limit_s,
                    "samples_done": samples_done,
                }
            try:
                kind, payload = receiver.recv()
            except EOFError:
                child.join()
                raise RuntimeError(
                    f"stock pipeline child exited with code {child.exitcode}"
                ) from None
            if kind == "progress":
                samples_done = payload
            elif kind == "error":
                raise RuntimeError(f"stock pipeline failed in the child process:\n{payload}")
            else:
                return payload
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receiver.close()


def reference_volume(directory: Path, mask_fraction: float, regenerate: bool) -> Path:
    """The BENCHMARK.md volume with a ``mask_fraction`` mask, written unless it exists."""
    container = directory / f"reference_mask{round(100 * mask_fraction)}.zarr"
    if regenerate or not (container / "mask" / "zarr.json").exists():
        from voltrain.synthetic import make_synthetic_volume

        start = time.perf_counter()
        make_synthetic_volume(
            container,
            shape=(256, 256, 256),
            voxel_size=(8, 8, 8),
            offset=(400, 800, 1200),
            num_cells=200,
            mask_fraction=mask_fraction,
            chunk_shape=(64, 64, 64),
            seed=0,
        )
        print(f"generated {container} in {time.perf_counter() - start:.0f} s")
    return container


def _print_result(title: str, result: dict) -> None:
    print(f"== {title}")
    if result["timed_out"]:
        print(
            f"timed out after {result['time_limit_s']:.0f} s "
            f"with {result['samples_done']} samples done"
        )
        return
    print(
        f"{result['samples_per_s']:.2f} samples/s, {result['ms_per_sample']:.0f} ms/sample "
        f"({result['num_samples']} samples after {result['warmup']} warm-up), "
        f"setup {result['setup_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB"
    )
    print("ms per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in result["ms_per_stage"].items()))
    print("ms per node:  " + ", ".join(f"{k} {v:.0f}" for k, v in result["ms_per_node"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default="/tmp/voltrain_bench")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds, dense mask")
    parser.add_argument("--sparse-time-limit", type=float, default=60.0, help="seconds, 10%% mask")
    parser.add_argument("--skip-sparse", action="store_true")
    args = parser.parse_args()

    directory = Path(args.directory)
    variants = [("mask 40%", 0.4, args.time_limit)]
    if not args.skip_sparse:
        variants.append(("mask 10%", 0.1, args.sparse_time_limit))
    for title, mask_fraction, time_limit_s in variants:
        container = reference_volume(directory, mask_fraction, regenerate=False)
        result = time_stock(container, args.samples, args.warmup, time_limit_s)
        _print_result(title, result)


if __name__ == "__main__":
    main()
