"""distances and multiclass end to end: train with snapshots and blockwise validation,
predict a volume with ``voltrain predict``, and be refused by segmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from funlib.persistence import open_ds, prepare_ds

from tests.helpers import experiment_dict
from voltrain.cli import main
from voltrain.io.write import level_path
from voltrain.synthetic import make_synthetic_volume

TASKS = {
    "distances": ({"type": "distances", "scale": 16.0}, "sign_accuracy", 1),
    "multiclass": (
        {"type": "multiclass", "num_classes": 3, "class_weights": [0.5, 1.0, 2.0]},
        "mean_dice",
        3,
    ),
}


def _write_classes(container: Path) -> Path:
    """Class ids from the instance labels: 0 background, 1 or 2 by the id's parity."""
    labels = open_ds(str(container / "labels"))
    ids = labels[labels.roi]
    classes = np.where(ids == 0, 0, 1 + ids % 2).astype(np.uint8)
    array = prepare_ds(
        str(container / "classes"),
        shape=classes.shape,
        offset=labels.roi.offset,
        voxel_size=labels.voxel_size,
        dtype=np.uint8,
        chunk_shape=(32, 32, 32),
        mode="w",
    )
    array[array.roi] = classes
    return container / "classes"


@pytest.fixture(scope="module")
def small_volume(tmp_path_factory) -> Path:
    """40^3 voxels with class ids beside the instance labels."""
    container = tmp_path_factory.mktemp("tasks") / "small.zarr"
    make_synthetic_volume(
        container, shape=(40, 40, 40), num_cells=8, mask_fraction=0.6, chunk_shape=(20,) * 3
    )
    _write_classes(container)
    return container


def _config(volume: Path, task_type: str) -> dict:
    task, metric, _ = TASKS[task_type]
    gt = "classes" if task_type == "multiclass" else "labels"
    config = experiment_dict(
        volume,
        batch_size=1,
        max_steps=2,
        snapshot_interval=2,
        checkpoint_interval=2,
        validation_interval=2,
        validation={"mode": "blockwise", "metric": metric},
    )
    config["task"] = task
    config["data"]["train"][0].update(gt=str(volume / gt))
    config["data"]["validate"] = [
        {"raw": str(volume / "raw"), "gt": str(volume / gt), "mask": str(volume / "mask")}
    ]
    return config


@pytest.mark.parametrize("task_type", sorted(TASKS))
def test_task_trains_validates_snapshots_and_predicts_its_channels(
    task_type, small_volume, write_config, tmp_path, capsys
):
    _, metric, channels = TASKS[task_type]
    config_path = write_config(_config(small_volume, task_type))
    out = tmp_path / "run"
    assert main(["train", str(config_path), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    checkpoint = out / "checkpoints" / "best.pt"
    assert checkpoint.exists()
    snapshot = out / "snapshots.zarr" / "2"
    target = open_ds(level_path(snapshot / "target"))
    prediction = open_ds(level_path(snapshot / "prediction"))
    assert target.shape[0] == channels and prediction.shape[0] == channels
    values = prediction[prediction.roi]
    if task_type == "distances":
        assert values.min() >= -1 and values.max() <= 1  # tanh
    else:
        np.testing.assert_allclose(values.sum(axis=0), 1.0, atol=1e-5)  # softmax

    output = tmp_path / "pred.zarr" / "pred"
    code = main(
        [
            "predict",
            str(config_path),
            "--checkpoint",
            str(checkpoint),
            "--input",
            str(small_volume / "raw"),
            "--output",
            str(output),
            "--roi",
            "0,0,0:160,160,160",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    predicted = open_ds(level_path(output))
    assert predicted.shape == (channels, 20, 20, 20)
    data = predicted[predicted.roi]
    if task_type == "multiclass":
        np.testing.assert_allclose(data.sum(axis=0), 1.0, atol=1e-5)
    else:
        assert np.abs(data).max() <= 1 and np.abs(data).max() > 0

    capsys.readouterr()
    refused = tmp_path / "refused.zarr" / "pred"
    args = ["predict", str(config_path), "--checkpoint", str(checkpoint)]
    args += ["--input", str(small_volume / "raw"), "--output", str(refused)]
    args += ["--segment", str(tmp_path / "seg.zarr" / "seg"), "--no-progress"]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"task.type is '{task_type}'" in lines[0]
    assert not refused.parent.exists()
    segment = ["segment", str(config_path), "--input", str(output)]
    assert main([*segment, "--output", str(tmp_path / "seg.zarr" / "seg")]) == 2
    assert f"task.type is '{task_type}'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "task, key",
    [
        ({"type": "multiclass", "num_classes": 3, "class_weights": [1, 2]}, "class_weights"),
        ({"type": "multiclass", "num_classes": 1}, "num_classes"),
        ({"type": "distances", "scale": -2}, "scale"),
        ({"type": "affinities", "balance_clip": [0.6, 0.4]}, "balance_clip"),
    ],
)
def test_bad_task_config_is_one_line_naming_the_key(
    task, key, small_volume, write_config, tmp_path, capsys
):
    config = experiment_dict(small_volume)
    config["task"] = task
    out = tmp_path / "run"
    code = main(["train", str(write_config(config)), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"task.{key}" in err or (key in err and "task" in err), err
    assert not out.exists()
