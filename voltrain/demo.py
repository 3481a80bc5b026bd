"""``voltrain demo``: generate a synthetic volume and train the demo config on it."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import yaml

from voltrain.experiment import load_config
from voltrain.run import RunResult, train
from voltrain.synthetic import make_synthetic_volume


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
    data = out_dir / "data.zarr"
    if not (data / "mask").exists():
        print(f"generating a synthetic {size}^3 volume in {data}")
        make_synthetic_volume(
            data,
            shape=(size,) * 3,
            voxel_size=(8, 8, 8),
            num_cells=max(8, size**3 // 8000),
            mask_fraction=0.6,
            chunk_shape=(32, 32, 32),
            seed=0,
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
