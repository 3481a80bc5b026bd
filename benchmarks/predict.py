"""Blockwise prediction speed with 1 and 2 workers (not a test).

Generates a synthetic volume and a randomly initialised U-Net checkpoint, runs
``voltrain.predict.predict`` over the whole volume with each worker count, and prints voxels/s
end to end (worker start-up included) and in steady state (between the first and the last
finished block, from the done markers' times), and the 2-worker/1-worker ratios.

    python benchmarks/predict.py [DIR] [--size 128] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import torch
import yaml

from voltrain.experiment import load_config
from voltrain.models.unet import build_model
from voltrain.predict import predict
from voltrain.run.checkpoint import save_checkpoint
from voltrain.synthetic import make_synthetic_volume

MODEL = {"num_fmaps": 6, "fmap_inc_factor": 3, "downsample_factors": [[2, 2, 2], [2, 2, 2]]}
INPUT_SHAPE = [76, 76, 76]  # -> 36^3 output voxels


def prepare(directory: Path, size: int) -> tuple[Path, Path, str]:
    container = directory / "volume.zarr"
    if not container.exists():
        make_synthetic_volume(container, shape=(size,) * 3, voxel_size=(8, 8, 8), seed=0)
    config = {
        "data": {"train": [{"raw": str(container / "raw"), "gt": str(container / "labels")}]},
        "model": MODEL,
        "task": {"type": "affinities"},
        "trainer": {"input_shape": INPUT_SHAPE},
    }
    config_path = directory / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    model = build_model(load_config(config_path).model, 1, 3)
    checkpoint = save_checkpoint(
        directory / "checkpoints", 0, {"model": model.state_dict(), "iteration": 0}
    )
    return config_path, checkpoint, str(container / "raw")


def steady_voxels_per_second(output: str, voxels_per_block: float) -> float:
    """Blocks finished per second between the first and the last done marker."""
    blocks = Path(output + ".done") / "blocks"
    times = sorted(entry.stat().st_mtime for entry in os.scandir(blocks))
    if len(times) < 2 or times[-1] == times[0]:
        return float("nan")
    return (len(times) - 1) * voxels_per_block / (times[-1] - times[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", help="working directory (default: a temporary one)")
    parser.add_argument("--size", type=int, default=128, help="volume edge, voxels")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    directory = Path(args.directory or tempfile.mkdtemp(prefix="voltrain-predict-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    config, checkpoint, raw = prepare(directory, args.size)
    print(
        f"volume {args.size}^3 voxels, input {INPUT_SHAPE}, model {MODEL}, {os.cpu_count()} cores"
    )
    rates = {}
    for workers in args.workers:
        output = str(directory / "out.zarr" / f"pred_{workers}")
        shutil.rmtree(output, ignore_errors=True)
        shutil.rmtree(output + ".done", ignore_errors=True)
        result = predict(
            config, checkpoint, raw, output, workers=workers, device="cpu", progress=False
        )
        steady = steady_voxels_per_second(output, result.voxels / result.blocks)
        rates[workers] = (result.voxels_per_second, steady)
        print(
            f"{workers} worker(s): {result.blocks} blocks in {result.seconds:.1f} s, "
            f"{result.voxels_per_second:,.0f} voxels/s end to end, {steady:,.0f} voxels/s steady"
        )
    if 1 in rates and 2 in rates:
        print(
            f"ratio 2/1 workers: {rates[2][0] / rates[1][0]:.2f} end to end, "
            f"{rates[2][1] / rates[1][1]:.2f} steady"
        )


if __name__ == "__main__":
    main()
