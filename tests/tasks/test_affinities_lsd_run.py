"""affinities+lsd through the CLI: training with snapshots and validation by segmentation,
then ``voltrain predict --segment`` (all channels predicted, the affinities segmented) and
``voltrain evaluate``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from funlib.persistence import open_ds, prepare_ds

from tests.helpers import experiment_dict
from voltrain.cli import main
from voltrain.experiment import load_config
from voltrain.io.write import level_path
from voltrain.segment import segment_array
from voltrain.synthetic import make_synthetic_volume

TASK = {"type": "affinities+lsd", "sigma": [16, 16, 16], "lsd_weight": 0.5}


@pytest.fixture(scope="module")
def validation_volume(tmp_path_factory):
    """40^3 voxels at 8 nm: 2 x 2 x 2 validation blocks of the tiny U-Net."""
    container = tmp_path_factory.mktemp("lsd_validate") / "validate.zarr"
    make_synthetic_volume(
        container,
        shape=(40, 40, 40),
        voxel_size=(8, 8, 8),
        num_cells=8,
        mask_fraction=0.6,
        chunk_shape=(20, 20, 20),
        seed=4,
    )
    return container


@pytest.fixture(scope="module")
def trained(volume, validation_volume, tmp_path_factory):
    """``voltrain train`` of 2 iterations: (config path, run directory)."""
    directory = tmp_path_factory.mktemp("lsd_run")
    validation = {"mode": "blockwise", "metric": "voi", "thresholds": [0.3, 0.7]}
    raw = experiment_dict(
        volume,
        batch_size=1,
        max_steps=2,
        snapshot_interval=2,
        validation_interval=2,
        validation=validation,
    )
    raw["task"] = TASK
    names = {"raw": "raw", "gt": "labels", "mask": "mask"}
    raw["data"]["validate"] = [{key: str(validation_volume / n) for key, n in names.items()}]
    config = directory / "experiment.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = directory / "run"
    assert main(["train", str(config), "--out", str(out), "--no-progress"]) == 0
    return config, out


def test_training_validates_by_segmenting_the_affinity_channels(trained):
    _, out = trained
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    validated = [row for row in rows if "validation_voi" in row]
    assert [row["iteration"] for row in validated] == [2]
    row = validated[0]
    assert np.isfinite(row["validation_voi"]) and row["validation_threshold"] in (0.3, 0.7)
    assert 0 <= row["validation_affinity_accuracy"] <= 1 and row["validation_lsd_mse"] >= 0


def test_snapshots_hold_all_channels(trained):
    _, out = trained
    snapshot = out / "snapshots.zarr" / "2"
    shapes = {}
    for name in ("target", "weight", "prediction"):
        array = open_ds(level_path(str(snapshot / name)))
        shapes[name] = array.shape
    assert {shape[0] for shape in shapes.values()} == {13}  # 3 affinities + 10 LSDs
    target = open_ds(level_path(str(snapshot / "target")))[:]
    assert np.all((target >= 0) & (target <= 1)) and target[3:].any()


def test_predict_writes_every_channel_and_segments_the_affinities(
    trained, validation_volume, tmp_path
):
    config_path, out = trained
    checkpoint = max((out / "checkpoints").glob("iteration_*.pt"))
    prediction = tmp_path / "out.zarr" / "pred"
    segmentation = tmp_path / "out.zarr" / "seg"
    args = ["predict", str(config_path), "--checkpoint", str(checkpoint)]
    args += ["--input", str(validation_volume / "raw"), "--output", str(prediction)]
    args += ["--block-shape", "40", "40", "40", "--no-progress"]  # one block
    args += ["--segment", str(segmentation), "--thresholds", "0.5"]
    assert main(args) == 0
    predicted = open_ds(level_path(str(prediction)))
    assert predicted.shape[0] == 13
    channels = predicted[:]

    result = open_ds(level_path(f"{segmentation}/threshold_0.5"))
    assert result.dtype == np.uint64 and result.roi == predicted.roi
    settings = load_config(config_path).segment
    expected = segment_array(
        channels[:3],
        [[-1, 0, 0], [0, -1, 0], [0, 0, -1]],
        [0.5],
        None,
        settings,
        predicted.voxel_size,
    )
    np.testing.assert_array_equal(result[:], expected[0.5])

    scores = tmp_path / "scores.json"
    gt = str(validation_volume / "labels")
    evaluate = ["evaluate", "--segmentation", str(segmentation), "--gt", gt]
    assert main([*evaluate, "--out", str(scores)]) == 0
    assert scores.exists()


def test_segmenting_a_prediction_with_the_wrong_channels_is_one_line(trained, tmp_path, capsys):
    config_path, _ = trained
    affinities_only = tmp_path / "affs.zarr" / "affs"
    prepare_ds(str(affinities_only), (3, 8, 8, 8), voxel_size=(8, 8, 8), dtype=np.float32)
    args = ["segment", str(config_path), "--input", str(affinities_only)]
    assert main([*args, "--output", str(tmp_path / "seg.zarr" / "seg"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "3 channels, but the task predicts 13" in err, err
    assert not (tmp_path / "seg.zarr").exists()


def test_an_lsd_only_task_cannot_be_segmented(tmp_path, capsys, volume):
    raw = experiment_dict(volume)
    raw["task"] = {"type": "lsd", "sigma": 16}
    config = tmp_path / "lsd.yaml"
    config.write_text(yaml.safe_dump(raw))
    args = ["segment", str(config), "--input", str(tmp_path / "in"), "--output"]
    assert main([*args, str(tmp_path / "seg.zarr" / "seg"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "task.type is 'lsd'" in err, err
