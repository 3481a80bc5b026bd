"""How well loader workers keep the training device busy (the GPU-feeding benchmark).

Trains the reference setup of BENCHMARK.md through voltrain's own trainer and loader and
prints one table: iterations/s of the model alone (the batch already on the device), then
fed by N loader workers, with the device's busy share (NVML, CUDA only), the share of each
iteration spent waiting for data, and the seconds until the first batch arrived. A last
table compares the first batch from N workers when the pipeline travels in each worker's
start payload (the old way: workers start one after another) and by file (the default).

On CUDA it uses the reference model (3 levels, 12 feature maps, factor 5, 132^3 in,
40^3 out, bf16). Without a GPU it runs a small CPU version of the same measurements, so the
script is exercised by the tests.

    python benchmarks/train_gpu.py [DIR] [--device auto] [--workers 4 8 16] [--iterations 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # loader workers: one core each (they inherit it)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stock_gunpowder import reference_volume  # noqa: E402

from voltrain.experiment import parse_config  # noqa: E402
from voltrain.loader import make_loader  # noqa: E402
from voltrain.models.unet import build_model  # noqa: E402
from voltrain.synthetic import make_synthetic_volume  # noqa: E402

AUGMENTS = [
    {"type": "elastic", "control_point_spacing": [80] * 3, "jitter_sigma": [16] * 3},
    {"type": "simple"},
    {"type": "intensity", "scale_min": 0.9, "scale_max": 1.1, "shift_min": -0.1, "shift_max": 0.1},
    {"type": "noise", "mode": "gaussian", "var": 0.01},
]
GPU_MODEL = {"num_fmaps": 12, "fmap_inc_factor": 5, "downsample_factors": [[2, 2, 2]] * 2}
CPU_MODEL = {"num_fmaps": 4, "fmap_inc_factor": 2, "downsample_factors": [[2, 2, 2]]}


def experiment(container: Path, cuda: bool, workers: int, deform_on_device: bool) -> dict:
    """The reference experiment over ``container``: model, augments, min_masked 0.5."""
    return {
        "data": {
            "train": [
                {
                    "raw": str(container / "raw"),
                    "gt": str(container / "labels"),
                    "mask": str(container / "mask"),
                }
            ]
        },
        "model": GPU_MODEL if cuda else CPU_MODEL,
        "task": {"type": "affinities"},
        "trainer": {
            "input_shape": [132] * 3 if cuda else [44] * 3,
            "amp": "bf16" if cuda else "none",
            "num_data_fetchers": workers,
            "min_masked": 0.5,
            "augments": AUGMENTS,
            "deform_on_device": deform_on_device,
            "snapshot_interval": 0,
            "checkpoint_interval": 0,
            "validation_interval": 0,
            "log_every": 10**9,
            "max_steps": 10**9,
            "data_timeout": 900,
        },
    }


def build_run(config_dict: dict, device: torch.device):
    config = parse_config(config_dict)
    task = config.task
    model = build_model(config.model, 1, task.build().num_channels).to(device)
    trainer = config.trainer.build()
    trainer.build_batch_provider(config.data.train, model, task)
    return trainer, model, trainer.create_optimizer(model)


class BusyMeter:
    """Samples the GPU's utilisation (NVML) in a thread; ``mean`` is None without NVML."""

    def __init__(self, device: torch.device):
        self._samples: list[int] = []
        self._stop = threading.Event()
        self._handle = None
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                index = device.index if device.index is not None else torch.cuda.current_device()
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                self._nvml = pynvml
            except Exception:  # no NVML: the column reads n/a
                self._handle = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            self._samples.append(rates.gpu)

    def __enter__(self) -> BusyMeter:
        if self._handle is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    @property
    def mean(self) -> float | None:
        return sum(self._samples) / len(self._samples) / 100 if self._samples else None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(config_dict: dict, device: torch.device, iterations: int, warmup: int) -> float:
    """Iterations/s of the training step alone, on one batch already on the device."""
    trainer, model, optimizer = build_run(config_dict, device)
    sample = trainer.pipeline.request_sample(0)
    raw, target, weight = (
        torch.from_numpy(sample[key]).unsqueeze(0).to(device) for key in ("raw", "target", "weight")
    )
    engine = trainer.step_engine(model, optimizer, device)
    task = trainer.pipeline.task.build()
    for i in range(warmup + iterations):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        engine.step(task, raw, target, weight, i, False)
    synchronize(device)
    return iterations / (time.perf_counter() - start)


def loader_fed(config_dict: dict, device: torch.device, iterations: int, warmup: int) -> dict:
    """Iterations/s, busy share, data-wait share and first-batch seconds with the loader."""
    trainer, model, optimizer = build_run(config_dict, device)
    trainer.until = warmup + iterations
    waited = elapsed = 0.0
    with trainer, BusyMeter(device) as meter:
        start = time.perf_counter()
        for stats in trainer.iterate(warmup + iterations, model, optimizer, device):
            if stats.iteration == 1:
                first_batch = time.perf_counter() - start
            if stats.iteration == warmup:
                synchronize(device)
                start = time.perf_counter()
            elif stats.iteration > warmup:
                waited += stats.data_time
        synchronize(device)
        elapsed = time.perf_counter() - start
    return {
        "it/s": iterations / elapsed,
        "busy": meter.mean,
        "data wait": waited / elapsed,
        "first batch s": first_batch,
    }


def first_batch_seconds(config_dict: dict, ship_by_file: bool) -> tuple[float, float]:
    """Seconds the parent spends starting the workers, and until every worker's first batch.

    Starting is what a start payload larger than the pipe buffer serialises: each
    ``Process.start()`` then waits until that child has imported what unpickling needs.
    """
    trainer, _, _ = build_run(config_dict, torch.device("cpu"))
    workers = config_dict["trainer"]["num_data_fetchers"]
    start = time.perf_counter()
    loader = make_loader(
        trainer.pipeline, 0, 1, 0, workers, timeout=900, ship_pipeline_by_file=ship_by_file
    )
    iterator = iter(loader)
    started = time.perf_counter() - start
    for _ in range(workers):  # one batch from each worker: every worker is up
        next(iterator)
    seconds = time.perf_counter() - start
    iterator._shutdown_workers()
    return started, seconds


def _cell(value: float | None, form: str) -> str:
    return "n/a" if value is None else format(value, form)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default="/tmp/voltrain_bench")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--workers", type=int, nargs="+", help="default: 4 8 16 (CUDA), 1 2")
    parser.add_argument("--iterations", type=int, help="measured iterations (200 CUDA, 10 CPU)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--size", type=int, default=96, help="CPU volume edge, voxels")
    parser.add_argument("--skip-start", action="store_true", help="skip the first-batch table")
    parser.add_argument("--only-start", action="store_true", help="only the first-batch table")
    args = parser.parse_args()
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if name == "auto" else name)
    cuda = device.type == "cuda"
    workers = args.workers or ([4, 8, 16] if cuda else [1, 2])
    iterations = args.iterations or (200 if cuda else 10)
    directory = Path(args.directory)
    if cuda:
        container = reference_volume(directory, 0.4, regenerate=False)
    else:
        container = directory / f"small_{args.size}.zarr"
        if not (container / "mask").exists():
            size = (args.size,) * 3
            make_synthetic_volume(container, size, num_cells=40, mask_fraction=0.6, seed=0)
    gpu = torch.cuda.get_device_name(device) if cuda else "none (CPU version)"
    print(f"device {device} ({gpu}), {os.cpu_count()} cores, torch {torch.__version__}")

    if not args.only_start:
        training_table(container, cuda, device, workers, iterations, args.warmup)
    if not args.skip_start:
        start_table(container, cuda, workers)


def training_table(container, cuda, device, workers, iterations, warmup) -> None:
    base = experiment(container, cuda, 0, False)
    print(f"{'setup':34s} {'it/s':>8s} {'busy':>6s} {'data wait':>10s} {'first batch s':>14s}")
    rate = model_only(base, device, iterations, warmup)
    print(f"{'model only, batch on the device':34s} {rate:8.2f} {'–':>6s} {'–':>10s} {'–':>14s}")
    rows = [(f"{n} loader workers", n, False) for n in workers]
    rows.append((f"{workers[-1]} workers, deform_on_device", workers[-1], True))
    for title, count, on_device in rows:
        config = experiment(container, cuda, count, on_device)
        result = loader_fed(config, device, iterations, warmup)
        print(
            f"{title:34s} {result['it/s']:8.2f} {_cell(result['busy'], '6.0%')} "
            f"{result['data wait']:10.0%} {result['first batch s']:14.1f}",
            flush=True,
        )


def start_table(container, cuda, workers) -> None:
    print("\nstarting N workers (s): the pipeline in each start payload vs sent by file")
    print(f"{'workers':>8s} {'start, payload':>15s} {'start, file':>12s} "
          f"{'first batch, payload':>21s} {'first batch, file':>18s}")  # fmt: skip
    for count in workers:
        config = experiment(container, cuda, count, False)
        inline = first_batch_seconds(config, ship_by_file=False)
        by_file = first_batch_seconds(config, ship_by_file=True)
        print(
            f"{count:8d} {inline[0]:15.1f} {by_file[0]:12.1f} {inline[1]:21.1f} {by_file[1]:18.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
