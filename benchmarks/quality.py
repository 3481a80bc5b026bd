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
        [--variant isotropic|anisotropic] [--size Z Y X] [--only RUN] [--semi]

``--semi`` compares other rows: semi-supervised training (``trainer.type:
semi_supervised``, a mean teacher) against supervised training, both with the labels of
ONE small cube of the training volume (``CUBE_SHAPE``), the semi-supervised run also with
the raw of a third volume (another seed, labels unused) as ``data.unlabeled``.

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
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds, prepare_ds

from voltrain.experiment import load_config
from voltrain.io.ome import level_array_path
from voltrain.predict import predict
from voltrain.run import train
from voltrain.scoring import compare_with_baseline, format_scores
from voltrain.synthetic_em import make_em_pair, make_em_volume

ITERATIONS = {"cpu": 500, "cuda": 3000}
RUNS = {"trained": True, "trained_without_augments": False}  # name: with augments
SEMI_RUNS = ("supervised_cube", "semi_supervised_cube")
CUBE_SHAPE = (40, 40, 40)  # the labeled cube, in voxels (the network's output is 28^3)
UNLABELED_SEED_OFFSET = 7  # the unlabeled volume's seed, after the training volume's
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


def labeled_cube(train_container: Path) -> Path:
    """``cube_labels``: the training labels of a ``CUBE_SHAPE`` cube at the volume's
    centre, with its world offset (written once); raw stays the whole volume."""
    path = train_container / "cube_labels"
    if not path.exists():
        labels = open_ds(str(train_container / "labels"))
        shape = Coordinate(CUBE_SHAPE)
        begin = (labels.roi.shape / labels.voxel_size - shape) / 2
        roi = Roi(labels.roi.offset + begin * labels.voxel_size, shape * labels.voxel_size)
        cube = prepare_ds(
            str(path),
            shape=tuple(shape),
            offset=roi.offset,
            voxel_size=labels.voxel_size,
            dtype=labels.dtype,
            mode="w",
        )
        cube[roi] = labels[roi]
    return path


def semi_configs(
    data: Path, train_container: Path, iterations: int, device: str, seed: int
) -> dict[str, dict]:
    """The supervised and the semi-supervised config of the ``--semi`` rows."""
    unlabeled = data / "unlabeled.zarr"
    if not (unlabeled / "raw").exists():
        make_em_volume(unlabeled, seed=seed + UNLABELED_SEED_OFFSET)
    supervised = experiment_config(train_container, True, iterations, device)
    supervised["data"]["train"][0].update(
        gt=str(labeled_cube(train_container)), mask=None, name="labeled_cube"
    )
    semi = yaml.safe_load(yaml.safe_dump(supervised))
    semi["data"]["unlabeled"] = [{"name": "unlabeled", "raw": str(unlabeled / "raw")}]
    semi["trainer"].update(
        type="semi_supervised",
        unlabeled_batch_size=1,
        ema_decay=0.99,
        consistency_weight=1.0,
        consistency_rampup=iterations // 3,
    )
    return {"supervised_cube": supervised, "semi_supervised_cube": semi}


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
    parser.add_argument("--semi", action="store_true", help="the semi-supervised rows instead")
    parser.add_argument(
        "--only",
        choices=sorted(RUNS) + list(SEMI_RUNS),
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
    if args.semi:
        configs = semi_configs(out / "data", train_container, iterations, args.device, args.seed)
    else:
        configs = {
            name: experiment_config(train_container, augments, iterations, args.device)
            for name, augments in RUNS.items()
        }
    runs, timings = {}, {}
    for name, config in configs.items():
        if args.only and name != args.only:
            continue
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
    report_path = out / ("quality_semi.json" if args.semi else "quality.json")
    report_path.write_text(json.dumps(report, indent=2))
    print(f"\nwritten {report_path}")


if __name__ == "__main__":
    main()
