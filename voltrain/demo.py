"""``voltrain demo``: generate synthetic EM, train the demo config on it, score the result.

The demo trains on ``data.zarr`` (``voltrain.synthetic_em``), then predicts a held-out volume
drawn with another seed (``heldout.zarr``), segments it and scores it against its labels,
beside the no-learning baseline (``voltrain.scoring``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import yaml

from voltrain.experiment import load_config
from voltrain.run import RunResult, train
from voltrain.scoring import Scores, compare_with_baseline
from voltrain.synthetic_em import HELDOUT_SEED_OFFSET, make_em_volume


def demo_config_text() -> str:
    """The packaged demo config (also at configs/demo.yaml in the repository)."""
    return files("voltrain").joinpath("demo.yaml").read_text()


def run_demo(
    out_dir: str | Path,
    iterations: int | None = None,
    size: int = 96,
    device: str = "auto",
    progress: bool = True,
) -> RunResult:
    """Generate ``out_dir/data.zarr`` (``size``^3 voxels) and train the demo config on it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, seed, mask_fraction in (
        ("data.zarr", 0, 0.6),
        ("heldout.zarr", HELDOUT_SEED_OFFSET, 1.0),
    ):
        if not (out_dir / name / "organelles").exists():
            print(f"generating a synthetic EM {size}^3 volume in {out_dir / name}")
            make_em_volume(
                out_dir / name,
                shape=(size,) * 3,
                voxel_size=(8, 8, 8),
                mask_fraction=mask_fraction,
                chunk_shape=(32, 32, 32),
                seed=seed,
            )
    config_path = out_dir / "demo.yaml"
    raw = yaml.safe_load(demo_config_text())
    if iterations is not None:
        raw["trainer"].pop("steps", None)
        raw["trainer"]["max_steps"] = iterations
        interval = max(1, min(100, iterations // 2))
        raw["trainer"]["snapshot_interval"] = interval
        raw["trainer"]["checkpoint_interval"] = interval
        raw["trainer"]["log_every"] = min(raw["trainer"]["log_every"], interval)
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(config_path)
    return train(config, out_dir / "run", device=device, resume=True, progress=progress)


def score_demo(
    out_dir: str | Path, result: RunResult, device: str = "auto"
) -> dict[str, dict[str, Scores]]:
    """Predict the held-out volume with the demo's final checkpoint, segment and score it.

    Returns, per segmenter (``voltrain``, then the ``waterz`` cross-check), the trained
    model's scores and the no-learning baseline's, in that order.
    """
    from funlib.persistence import open_ds

    from voltrain.io.write import level_path
    from voltrain.predict import predict

    out_dir = Path(out_dir)
    heldout = out_dir / "heldout.zarr"
    affinities = str(out_dir / "heldout_prediction.zarr" / "affinities")
    predict(
        out_dir / "demo.yaml",
        result.checkpoint,
        str(heldout / "raw"),
        affinities,
        device=device,
        overwrite=True,
        progress=False,
    )
    arrays = {name: open_ds(str(heldout / name)) for name in ("raw", "labels")}
    prediction = open_ds(level_path(affinities))
    neighborhood = load_config(out_dir / "demo.yaml").task.neighborhood
    inputs = (
        {f"trained ({result.iteration} iterations)": prediction[prediction.roi]},
        arrays["raw"][arrays["raw"].roi],
        arrays["labels"][arrays["labels"].roi],
        arrays["raw"].voxel_size,
        neighborhood,
    )
    return {
        segmenter: compare_with_baseline(*inputs, segmenter=segmenter)
        for segmenter in ("voltrain", "waterz")
    }
