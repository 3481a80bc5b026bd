"""voltrain's data pipeline against stock gunpowder on the reference pipeline (BENCHMARK.md).

Generates the reference volumes (or reuses them), then in this one process, alternating in
rounds, times voltrain's pipeline (as configured by default, and without the chunk cache and
without fusion, to show what each buys) and the stock-gunpowder pipeline. Prints samples/s
of each and the ratio to stock (medians over rounds), milliseconds per stage, scaling with
1 and 2 loader workers with the peak RSS of each worker, and the 10%-mask variant, where
stock gunpowder never returns a sample (it is stopped after ``--sparse-time-limit``).
With ``--sections``, the alternation also times the serial-section variant: voltrain's
pipeline with ``misalign`` and ``defect`` added, against stock gunpowder with ShiftAugment
and DefectAugment doing the same work (see ``stock_gunpowder.SECTION_*``).

    OMP_NUM_THREADS=1 python benchmarks/pipeline.py [DIR] [--rounds 10] [--sections]
"""

from __future__ import annotations

import os

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)
# one core per pipeline, set before numpy starts its thread pools (spawned workers inherit it)
for _name in THREAD_VARIABLES:
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from funlib.geometry import Coordinate  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torch.utils.data._utils.collate import default_collate  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stock_gunpowder import (  # noqa: E402
    SECTION_CONTRAST,
    SECTION_PROB_LOW_CONTRAST,
    SECTION_PROB_MISSING,
    SLIP_MAX_NM,
    STAGE_OF_NODE,
    build_stock_pipeline,
    reference_volume,
    seeded_request,
    time_stock,
)

from voltrain.augments import parse_augment  # noqa: E402
from voltrain.data import DatasetConfig  # noqa: E402
from voltrain.loader import make_loader  # noqa: E402
from voltrain.pipeline import (  # noqa: E402
    TrainingPipeline,
    compute_sampling_maps,
    open_training_volumes,
)
from voltrain.profiling import PROFILE_ENV, STAGES, format_stage_table  # noqa: E402
from voltrain.seeding import sample_seed  # noqa: E402
from voltrain.tasks.affinities import AffinitiesTaskConfig  # noqa: E402

INPUT_SHAPE = Coordinate(132, 132, 132)
OUTPUT_SHAPE = Coordinate(44, 44, 44)
MIN_MASKED = 0.5
REFERENCE_AUGMENTS = [
    {"type": "elastic", "control_point_spacing": [80] * 3, "jitter_sigma": [16] * 3},
    {"type": "simple"},
    {"type": "intensity", "scale_min": 0.9, "scale_max": 1.1, "shift_min": -0.1, "shift_max": 0.1},
    {"type": "noise", "mode": "gaussian", "var": 0.01},
]
# the serial-section variant: one slipped section and per-section defects (the same work as
# stock_gunpowder's sections=True)
SECTION_AUGMENTS = [
    {"type": "misalign", "mode": "slip", "max_displacement": SLIP_MAX_NM},
    {
        "type": "defect",
        "prob_missing": SECTION_PROB_MISSING,
        "prob_low_contrast": SECTION_PROB_LOW_CONTRAST,
        "contrast_min": SECTION_CONTRAST,
        "contrast_max": SECTION_CONTRAST,
    },
]
# voltrain configurations timed side by side: the default, without each optimisation, and
# the loader's share of deform_on_device (raw is then resampled on the training device)
VOLTRAIN_VARIANTS = {
    "voltrain": {},
    "no cache": {"chunk_cache_mb": 0},
    "unfused": {"chunk_cache_mb": 0, "fuse_augments": False},
    "on device": {"deform_on_device": True},
}


def voltrain_pipeline(container: Path, sections: bool = False, **options) -> TrainingPipeline:
    """voltrain's reference pipeline over ``container``, sample shapes without a U-Net;
    ``sections`` adds the serial-section augments."""
    datasets = [
        DatasetConfig(
            name=container.name,
            raw=str(container / "raw"),
            gt=str(container / "labels"),
            mask=str(container / "mask"),
        )
    ]
    volumes = open_training_volumes(datasets, OUTPUT_SHAPE)
    return TrainingPipeline(
        datasets=datasets,
        augments=[
            parse_augment(a) for a in REFERENCE_AUGMENTS + (SECTION_AUGMENTS if sections else [])
        ],
        task=AffinitiesTaskConfig(),
        input_shape=INPUT_SHAPE,
        output_shape=OUTPUT_SHAPE,
        min_masked=MIN_MASKED,
        clip_raw=True,
        sampling_maps=compute_sampling_maps(volumes, OUTPUT_SHAPE, MIN_MASKED),
        **options,
    )


class VoltrainSide:
    """Draws voltrain samples in this process, timing each and its stages."""

    def __init__(self, container: Path, **options):
        os.environ[PROFILE_ENV] = "1"  # per-stage timings in each sample
        self.pipeline = voltrain_pipeline(container, **options)
        self.pipeline.build()
        self.next_index = 0

    def sample(self) -> tuple[float, dict[str, float]]:
        seed = sample_seed(0, self.next_index, 0)
        self.next_index += 1
        start = time.perf_counter()
        sample = self.pipeline.request_sample(seed)
        seconds = time.perf_counter() - start
        self.last_sample = sample
        return seconds, dict(zip(STAGES, sample["stage_ms"], strict=True))


class StockSide:
    """Draws stock-gunpowder samples in this process, timing each and its stages."""

    def __init__(self, container: Path, sections: bool = False):
        self.pipeline, self.request, _ = build_stock_pipeline(str(container), sections=sections)
        self.pipeline.setup()
        self.next_index = 0

    def sample(self) -> tuple[float, dict[str, float]]:
        request = seeded_request(self.request, self.next_index)
        self.next_index += 1
        start = time.perf_counter()
        batch = self.pipeline.request_batch(request)
        seconds = time.perf_counter() - start
        stages = dict.fromkeys(("read", "sample", "deform", "mirror", "intensity", "noise"), 0.0)
        stages.update(target=0.0, other=0.0)
        for (node, _), summary in batch.profiling_stats.get_timing_summaries().items():
            stages[STAGE_OF_NODE.get(node, "other")] += 1000 * sum(summary.times)
        stages["other"] += max(0.0, 1000 * seconds - sum(stages.values()))
        return seconds, stages


def alternate(sides: dict, rounds: int, per_round: dict[str, int], warmup: int) -> dict:
    """Time the sides in turn, ``rounds`` times; per side: samples/s of each round, stages."""
    for side in sides.values():
        for _ in range(warmup):
            side.sample()
    results = {name: {"rate": [], "stages": [], "seconds": []} for name in sides}
    for round_index in range(rounds):
        for name, side in sides.items():
            times = []
            for _ in range(per_round[name]):
                seconds, stages = side.sample()
                times.append(seconds)
                results[name]["stages"].append(stages)
            results[name]["rate"].append(len(times) / sum(times))
            results[name]["seconds"] += times
        rates = ", ".join(f"{n} {r['rate'][-1]:.2f}/s" for n, r in results.items())
        print(f"  round {round_index + 1}/{rounds}: {rates}", flush=True)
    return results


def collate_ms(sample: dict, repeats: int = 20) -> float:
    """Milliseconds to collate one sample into a batch of one (the loader does it)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        default_collate([sample])
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a live process, MB (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class StockDataset(Dataset):
    """Stock-gunpowder samples for a DataLoader: each worker builds its own pipeline."""

    def __init__(self, container: str):
        self.container = container
        self.pipeline = None

    def __len__(self) -> int:
        return 2**31

    def __getitem__(self, index: int) -> dict:
        if self.pipeline is None:
            self.pipeline, self.request, self.keys = build_stock_pipeline(self.container)
            self.pipeline.setup()
        batch = self.pipeline.request_batch(seeded_request(self.request, index))
        # stock SimpleAugment hands over mirrored views, which torch cannot wrap
        return {name: np.ascontiguousarray(batch[key].data) for name, key in self.keys.items()}


def time_loader(loader: DataLoader, samples: int) -> tuple[float, list[float]]:
    """samples/s of ``loader`` after its first batch, and each worker's peak RSS (MB).

    A loader whose worker dies (seen once: a stock worker aborted at shutdown on a 2-core
    machine) gives NaN and a message instead of ending the benchmark.
    """
    iterator = iter(loader)
    try:
        next(iterator)  # workers start, build their graph, load the numba kernels
        start = time.perf_counter()
        for _ in range(samples):
            next(iterator)
        rate = samples / (time.perf_counter() - start)
        rss = [peak_rss_mb(worker.pid) for worker in iterator._workers]
    except RuntimeError as error:
        print(f"  loader failed: {str(error).strip().splitlines()[0]}", flush=True)
        return float("nan"), []
    finally:
        iterator._shutdown_workers()
    return rate, rss


def scaling(container: Path, samples: int, stock_samples: int) -> dict:
    """samples/s and per-worker peak RSS with 1 and 2 spawned loader workers, both sides."""
    results = {}
    for workers in (1, 2):
        pipeline = voltrain_pipeline(container)
        loader = make_loader(pipeline, 0, 1, 0, num_workers=workers, timeout=600)
        results[("voltrain", workers)] = time_loader(loader, samples)
        stock = DataLoader(
            StockDataset(str(container)),
            batch_size=1,
            num_workers=workers,
            multiprocessing_context="spawn",
            persistent_workers=True,
            timeout=600,
        )
        results[("stock", workers)] = time_loader(stock, stock_samples)
        print(f"  {workers} worker(s) done", flush=True)
    return results


def sparse_variant(container: Path, samples: int, time_limit_s: float) -> dict:
    """The 10%-mask volume: voltrain samples/s, and whether stock returns within the limit."""
    side = VoltrainSide(container)
    side.sample()
    seconds = [side.sample()[0] for _ in range(samples)]
    stock = time_stock(container, num_samples=5, warmup=0, time_limit_s=time_limit_s)
    return {"voltrain_rate": samples / sum(seconds), "stock": stock}


def report_alternation(
    results: dict, collate: dict[str, float], baselines: dict[str, str] | None = None
) -> None:
    """Samples/s per side (median of rounds), the ratios to stock, and ms per stage.

    ``baselines`` names the stock side each voltrain side is compared with (default
    ``stock``); a side named there as a baseline gets no ratio.
    """
    baselines = baselines or {}
    stock_sides = {"stock", *baselines.values()}
    print("\nsamples/s, one process, one thread (median over rounds; per-round ratio median):")
    for name, result in results.items():
        rates = np.array(result["rate"])
        line = f"  {name:10s} {np.median(rates):6.2f} samples/s  {1000 / np.median(rates):6.0f} ms"
        line += f"  ({len(result['seconds'])} samples)"
        if name not in stock_sides:
            stock = baselines.get(name, "stock")
            ratio = np.median(rates / np.array(results[stock]["rate"]))
            line += f"  {ratio:5.1f}x {stock}"
        print(line)
    columns = {}
    for name, result in results.items():
        stages = result["stages"]
        columns[name] = {key: float(np.mean([s[key] for s in stages])) for key in stages[0]}
        columns[name]["collate"] = collate.get(name, 0.0)
    print()
    print(format_stage_table(columns, "ms per stage (mean per sample)"))


def report_scaling(results: dict) -> None:
    print("\nloader scaling (spawned workers, batch size 1):")
    for (side, workers), (rate, rss) in results.items():
        worker_rss = ", ".join(f"{r:.0f}" for r in rss)
        print(f"  {side:8s} {workers} worker(s): {rate:6.2f} samples/s, peak RSS MB: {worker_rss}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default="/tmp/voltrain_bench")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--voltrain-per-round", type=int, default=4)
    parser.add_argument("--stock-per-round", type=int, default=2)
    parser.add_argument("--loader-samples", type=int, default=40)
    parser.add_argument("--sparse-time-limit", type=float, default=60.0, help="seconds")
    parser.add_argument("--regenerate", action="store_true", help="rewrite the volumes")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-sparse", action="store_true")
    parser.add_argument(
        "--sections",
        action="store_true",
        help="also time misalign + defect against stock ShiftAugment + DefectAugment",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    directory = Path(args.directory)
    dense = reference_volume(directory, 0.4, args.regenerate)
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, {platform.processor() or ''} "
        f"{os.cpu_count()} cores, python {platform.python_version()}, torch {torch.__version__}"
    )
    sides = {name: VoltrainSide(dense, **options) for name, options in VOLTRAIN_VARIANTS.items()}
    sides["stock"] = StockSide(dense)
    per_round = {name: args.voltrain_per_round for name in VOLTRAIN_VARIANTS}
    per_round["stock"] = args.stock_per_round
    baselines = {}
    if args.sections:
        sides["sections"] = VoltrainSide(dense, sections=True)
        sides["stock sect"] = StockSide(dense, sections=True)
        per_round.update({"sections": args.voltrain_per_round, "stock sect": args.stock_per_round})
        baselines["sections"] = "stock sect"
    print(f"alternating {args.rounds} rounds on {dense}:")
    results = alternate(sides, args.rounds, per_round, warmup=2)
    voltrain_sides = [name for name in sides if name not in ("stock", "stock sect")]
    collate = {name: collate_ms(sides[name].last_sample) for name in voltrain_sides}
    report_alternation(results, collate, baselines)
    cache = sides["voltrain"].pipeline._chunk_cache
    print(
        f"collate: a batch of one sample (stock: none, it hands numpy arrays over); chunk "
        f"cache: {cache.hits / max(1, cache.hits + cache.misses):.0%} hits, "
        f"{cache.bytes / 2**20:.0f} MiB held"
    )
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none here"
    print(f"GPU: {gpu}; 'on device' times only the loader's share (raw read, not resampled)")
    del sides

    if not args.skip_scaling:
        print("\nloader workers:")
        stock_samples = max(4, args.loader_samples // 8)
        report_scaling(scaling(dense, args.loader_samples, stock_samples))
    if not args.skip_sparse:
        sparse = reference_volume(directory, 0.1, args.regenerate)
        result = sparse_variant(sparse, 20, args.sparse_time_limit)
        stock = result["stock"]
        outcome = (
            f"no sample in {stock['time_limit_s']:.0f} s (stopped)"
            if stock["timed_out"]
            else f"{stock['samples_per_s']:.2f} samples/s"
        )
        print(f"\n10% mask: voltrain {result['voltrain_rate']:.2f} samples/s; stock: {outcome}")


if __name__ == "__main__":
    main()
