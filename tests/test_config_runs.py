"""Every example config in configs/ trains: its task, augments and trainer run for two
iterations on a small synthetic volume at the voxel size the config is written for.

Only what a test machine cannot hold is shrunk: the data (a generated volume instead of the
config's paths), the U-Net's feature maps, and the input shape (the smallest the config's
network takes). Everything else (task, augments in their order, trainer type and keys) is
the config's own, so a config whose augments or task cannot run fails here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from funlib.persistence import open_ds, prepare_ds

from voltrain.experiment import parse_config
from voltrain.models.unet import UNetConfig
from voltrain.run import train
from voltrain.synthetic import make_synthetic_volume

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
# the voxel size each config's world units (spacings, sigmas, displacements) are meant for
VOXEL_SIZES = {"em_": (40, 4, 4), "fibsem_": (8, 8, 8)}


def _voxel_size(path: Path) -> tuple[int, int, int]:
    return next((v for k, v in VOXEL_SIZES.items() if path.name.startswith(k)), (8, 8, 8))


def _small_input_shape(model: dict, margin: int = 8) -> list[int]:
    """The smallest input the config's U-Net takes whose output has a few voxels per axis."""
    unet = UNetConfig.model_validate(model)
    factors = np.prod(np.asarray(unet.downsample_factors), axis=0)
    approx = [1 + margin * int(f) for f in factors]
    shape = list(unet.valid_input_shape(approx))
    while min(unet.output_shape(shape)) < 2:
        shape = list(unet.valid_input_shape([s + 1 for s in shape]))
    return shape


def _write_data(container: Path, shape: list[int], voxel_size, num_classes: int | None) -> None:
    # a margin around the input, so that locations (and shifted or deformed reads) vary
    volume_shape = [s + max(6, s // 6) for s in shape]
    num_cells = max(8, math.prod(volume_shape) // 40_000)
    make_synthetic_volume(
        container, volume_shape, voxel_size, num_cells=num_cells, mask_fraction=0.8
    )
    if num_classes is not None:  # class ids instead of instance ids (0 stays background)
        labels = open_ds(str(container / "labels"))
        ids = labels.to_ndarray(labels.roi)
        classes = prepare_ds(
            str(container / "classes"),
            shape=ids.shape,
            offset=labels.offset,
            voxel_size=labels.voxel_size,
            dtype=np.uint8,
            mode="w",
        )
        classes[classes.roi] = np.where(ids > 0, ids % num_classes, 0).astype(np.uint8)


def _shrunk(raw: dict, container: Path, input_shape: list[int]) -> dict:
    num_classes = raw["task"].get("num_classes") if raw["task"]["type"] == "multiclass" else None
    gt = "classes" if num_classes is not None else "labels"
    dataset = {"raw": str(container / "raw"), "gt": str(container / gt)}
    dataset["mask"] = str(container / "mask")
    data = {"train": [dataset]}
    if "unlabeled" in raw["data"]:
        data["unlabeled"] = [{"raw": str(container / "raw"), "mask": str(container / "mask")}]
    trainer = dict(raw["trainer"])
    trainer.update(
        input_shape=input_shape,
        batch_size=1,
        max_steps=2,
        num_data_fetchers=0,
        snapshot_interval=1,
        checkpoint_interval=0,
        log_every=1,
        validation_interval=0,
        min_masked=min(trainer.get("min_masked", 0.0), 0.3),
    )
    trainer.pop("steps", None)
    model = {**raw.get("model", {}), "num_fmaps": 2, "fmap_inc_factor": 2}
    return {**raw, "data": data, "model": model, "trainer": trainer}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_example_config_trains(path: Path, tmp_path: Path):
    raw = yaml.safe_load(path.read_text())
    model = {**raw.get("model", {}), "num_fmaps": 2, "fmap_inc_factor": 2}
    input_shape = _small_input_shape(model)
    num_classes = raw["task"].get("num_classes") if raw["task"]["type"] == "multiclass" else None
    container = tmp_path / "data.zarr"
    _write_data(container, input_shape, _voxel_size(path), num_classes)
    config = parse_config(_shrunk(raw, container, input_shape), source=path.name)
    assert [a.type for a in config.trainer.augments] == [
        a["type"] for a in raw["trainer"].get("augments", [])
    ]

    train(config, tmp_path / "run", device="cpu", progress=False)

    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    losses = [row["loss"] for row in rows if "loss" in row]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any((tmp_path / "run" / "snapshots").iterdir())
