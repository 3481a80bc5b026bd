"""Does training help? Segmentation quality of a trained model against no learning (not a test).

Generates a synthetic EM training volume and a held-out volume drawn with another seed
(``voltrain.synthetic_em``), trains the reference model (the demo config: U-Net, affinities,
full augment list) for a fixed number of iterations, and the same model without augments;
predicts the held-out volume with each (``voltrain.predict``), segments the affinities
(``voltrain.segment.segment_array``) over a sweep of boundary thresholds and merge thresholds and
scores them against the held-out labels (``voltrain.evaluate``, via ``voltrain.scoring``).
The no-learning baseline goes through the same segmentation: affinities from raw intensity
(``voltrain.baseline``). Prints VOI split, merge and sum and ARAND at each row's best
setting, then the same for the affinities segmented by waterz as a cross-check of the
segmentation step, and writes ``quality.json``.

    python benchmarks/quality.py [--out DIR] [--device cpu|cuda] [--iterations N]
        [--variant isotropic|anisotropic] [--size Z Y X] [--only RUN]

On the CPU the default budget is small (500 iterations per run, sized for two idle cores);
with ``--device cuda`` it is 3000 iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import yaml
from funlib.persistence import open_ds

from voltrain.experiment import load_config
from voltrain.io.ome import level_array_path
from voltrain.predict import predict
from voltrain.run import train
from voltrain.scoring import compare_with_baseline, format_scores
from voltrain.synthetic_em import make_em_pair

ITERATIONS = {"cpu": 500, "cuda": 3000}
RUNS = {"trained": True, "trained_without_augments": False}  # name: with augments
# Without augments only the fixed intensity map stays, so both runs see the same raw range.
KEPT_WITHOUT_AUGMENTS = {"intensity_scale_shift"}


def experiment_config(train_container: Path, augments: bool, iterations: int, device: str) -> dict:
    """The demo config trained on the synthetic EM training volume."""
    config = yaml.safe_load(files("voltrain").joinpath("demo.yaml").read_text())
    config["data"]["train"] = [
        {
            "name": "synthetic_em",
            "raw": str(train_container / "raw"),
            "gt": str(train_container / "labels"),
            "mask": str(train_container / "mask"),
        }
    ]
    trainer = config["trainer"]
    trainer.pop("steps", None)
    trainer["max_steps"] = iterations
    trainer["snapshot_interval"] = 0
    # checkpoints along the way: a stopped benchmark resumes, or scores an earlier budget
    trainer["checkpoint_interval"] = 50
    trainer["log_every"] = min(50, iterations)
    trainer["num_data_fetchers"] = 1 if device == "cpu" else 4
    if not augments:
        trainer["augments"] = [a for a in trainer["augments"] if a["type"] in KEPT_WITHOUT_AUGMENTS]
    return config


def train_and_predict(
    name: str, config: dict, out: Path, heldout_raw: str, device: str
) -> tuple[str, float, float]:
    """Train ``config`` in ``out/name`` and predict the held-out raw with it.

    Returns the affinities' path and the seconds spent training and predicting. A finished
    run and a complete prediction from the same checkpoint are reused.
    """
    run_dir = out / name
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    iterations = config["trainer"]["max_steps"]
    checkpoint = run_dir / "run" / "checkpoints" / f"iteration_{iterations:08d}.pt"
    start = time.perf_counter()
    if not checkpoint.exists():
        # resume=True: a rerun in the same --out continues a killed run
        result = train(
            load_config(config_path), run_dir / "run", device=device, resume=True, progress=False
        )
        checkpoint = result.checkpoint
    train_seconds = time.perf_counter() - start
    print(f"{name}: {checkpoint} after {train_seconds:.0f} s", flush=True)
    affinities = str(run_dir / "heldout.zarr" / "affinities")
    start = time.perf_counter()
    predict(
        config_path,
        checkpoint,
        heldout_raw,
        affinities,
        device=device,
        progress=False,
    )
    return affinities, train_seconds, time.perf_counter() - start


def em_pair(directory: Path, variant: str, shape, seed: int) -> tuple[Path, Path]:
    """The training and held-out containers, generated unless a previous run left them."""
    if not (directory / "heldout.zarr" / "organelles").exists():
        make_em_pair(directory, variant, shape, seed)
    return directory / "train.zarr", directory / "heldout.zarr"


def read(path: str):
    dataset = open_ds(level_array_path(path))
    return dataset[dataset.roi], dataset.voxel_size


def quality_report(rows, timings, iterations, device, variant, shape) -> dict:
    """What ``quality.json`` holds: the setup, the timings and every setting's scores."""
    return {
        "iterations": iterations,
        "device": device,
        "variant": variant,
        "shape": list(shape),
        "timings": timings,
        "scores": {
            name: {
                "fragment_parameter": scores.parameter,
                "fragment_value": scores.best_setting[0],
                "threshold": scores.best_setting[1],
                **scores.best,
                "seconds": scores.seconds,
                "by_setting": [
                    {"fragment_value": value, "threshold": threshold, **result}
                    for (value, threshold), result in scores.by_setting.items()
                ],
            }
            for name, scores in rows.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="working directory (default: a new temporary one)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--iterations", type=int, help="per training run (default: by device)")
    parser.add_argument("--variant", default="isotropic", choices=["isotropic", "anisotropic"])
    parser.add_argument("--size", type=int, nargs=3, help="volume shape z y x (default: variant's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training volume")
    parser.add_argument(
        "--only",
        choices=sorted(RUNS),
        help="only train and predict this run (e.g. one per machine; a later run in the same "
        "--out reuses it)",
    )
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    iterations = args.iterations or ITERATIONS[args.device]
    out = Path(args.out or tempfile.mkdtemp(prefix="voltrain-quality-"))
    print(f"working in {out}", flush=True)

    train_container, heldout = em_pair(out / "data", args.variant, args.size, args.seed)
    heldout_raw = str(heldout / "raw")
    runs, timings = {}, {}
    for name, augments in RUNS.items():
        if args.only and name != args.only:
            continue
        config = experiment_config(train_container, augments, iterations, args.device)
        affinities, train_s, predict_s = train_and_predict(
            name, config, out, heldout_raw, args.device
        )
        runs[name.replace("_", " ")] = read(affinities)[0]
        timings[name] = {"train_seconds": train_s, "predict_seconds": predict_s}
    if args.only:
        return
    raw, voxel_size = read(heldout_raw)
    gt, _ = read(str(heldout / "labels"))
    neighborhood = config["task"]["neighborhood"]
    rows = compare_with_baseline(runs, raw, gt, voxel_size, neighborhood)
    print(
        f"\nheld-out volume {gt.shape} at {tuple(voxel_size)} nm, "
        f"{iterations} iterations per training run, device {args.device}:\n"
    )
    print(format_scores(rows))
    cross_check = compare_with_baseline(runs, raw, gt, voxel_size, neighborhood, segmenter="waterz")
    print("\ncross-check, the same affinities segmented by waterz (no fragment parameter):\n")
    print(format_scores(cross_check))
    report = quality_report(rows, timings, iterations, args.device, args.variant, gt.shape)
    report["waterz_cross_check"] = quality_report(
        cross_check, timings, iterations, args.device, args.variant, gt.shape
    )["scores"]
    (out / "quality.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten {out / 'quality.json'}")


if __name__ == "__main__":
    main()
