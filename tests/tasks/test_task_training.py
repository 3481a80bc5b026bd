"""distances and multiclass end to end: train with snapshots and blockwise validation,
predict a volume with ``voltrain predict``, and be refused by segmentation."""

from __future__ import annotations

import json
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
    "class_distances": (
        {"type": "distances", "scale": 16.0, "num_classes": 3},
        "distance_error",
        2,
    ),
    "multiclass": (
        {"type": "multiclass", "num_classes": 3, "class_weights": [0.5, 1.0, 2.0]},
        "mean_dice",
        3,
    ),
}


def _write_derived(container: Path, name: str, derive) -> None:
    """``derive(labels)`` as array ``name`` beside the instance labels."""
    labels = open_ds(str(container / "labels"))
    data = derive(labels[labels.roi])
    array = prepare_ds(
        str(container / name),
        shape=data.shape,
        offset=labels.roi.offset,
        voxel_size=labels.voxel_size,
        dtype=data.dtype,
        chunk_shape=(20, 20, 20),
        mode="w",
    )
    array[array.roi] = data


@pytest.fixture(scope="module")
def small_volume(tmp_path_factory) -> Path:
    """40^3 voxels of cells: ``objects`` keeps two thirds of them on background (the
    synthetic cells fill the volume); ``classes`` has class 0 for background, 1 or 2 by
    the cell id's parity."""
    container = tmp_path_factory.mktemp("tasks") / "small.zarr"
    make_synthetic_volume(
        container, shape=(40, 40, 40), num_cells=8, mask_fraction=0.6, chunk_shape=(20,) * 3
    )
    _write_derived(container, "objects", lambda ids: np.where(ids % 3 == 0, 0, ids))
    _write_derived(
        container, "classes", lambda ids: np.where(ids % 3 == 0, 0, 1 + ids % 2).astype(np.uint8)
    )
    return container


def _config(volume: Path, task_type: str) -> dict:
    task, metric, _ = TASKS[task_type]
    gt = "objects" if task["type"] == "distances" and "num_classes" not in task else "classes"
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
    task, metric, channels = TASKS[task_type]
    kind = task["type"]
    config_path = write_config(_config(small_volume, task_type))
    out = tmp_path / "run"
    assert main(["train", str(config_path), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    checkpoint = out / "checkpoints" / "best.pt"
    assert checkpoint.exists()
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    validated = [row for row in logged if "validation_loss" in row]
    assert validated and np.isfinite(validated[-1][f"validation_{metric}"])
    snapshot = out / "snapshots.zarr" / "2"
    target = open_ds(level_path(snapshot / "target"))
    prediction = open_ds(level_path(snapshot / "prediction"))
    assert target.shape[0] == channels and prediction.shape[0] == channels
    values = prediction[prediction.roi]
    if kind == "distances":
        assert values.min() >= -1 and values.max() <= 1  # tanh
    else:
        np.testing.assert_allclose(values.sum(axis=0), 1.0, atol=1e-5)  # softmax
    if task_type == "class_distances":
        return  # predicts as "distances" does (below), with its channel count

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
    if kind == "multiclass":
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
    assert len(lines) == 1 and f"task.type is '{kind}'" in lines[0]
    assert not refused.parent.exists()
    segment = ["segment", str(config_path), "--input", str(output)]
    assert main([*segment, "--output", str(tmp_path / "seg.zarr" / "seg")]) == 2
    assert f"task.type is '{kind}'" in capsys.readouterr().err


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
