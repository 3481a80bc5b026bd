"""Raw with a channel axis (c, z, y, x): the network's input channels follow the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from funlib.geometry import Coordinate
from funlib.persistence import open_ds, prepare_ds

from tests.helpers import experiment_dict
from voltrain.cli import main
from voltrain.experiment import load_config, parse_config
from voltrain.io.write import level_path
from voltrain.models.unet import build_model
from voltrain.predict import predict
from voltrain.run import TrainingRun
from voltrain.run.checkpoint import save_checkpoint

AUGMENTS = [
    {
        "type": "elastic",
        "control_point_spacing": [40, 40, 40],
        "jitter_sigma": [8, 8, 8],
        "rotate": True,
    },
    {"type": "simple"},
    {"type": "intensity", "scale_min": 0.8, "scale_max": 1.2, "shift_min": -0.1, "shift_max": 0.1},
    {"type": "gamma", "gamma_min": 0.8, "gamma_max": 1.25},
]


def _write_channels(volume: Path, container: Path, second) -> Path:
    """raw of ``volume`` as channel 0 and ``second(raw)`` as channel 1, beside its labels."""
    raw = open_ds(str(volume / "raw"))
    data = raw[raw.roi]
    stacked = np.stack([data, second(data)])
    array = prepare_ds(
        str(container / "raw"),
        shape=stacked.shape,
        offset=raw.roi.offset,
        voxel_size=raw.voxel_size,
        dtype=stacked.dtype,
        chunk_shape=(2, 32, 32, 32),
        mode="w",
    )
    array[array.roi] = stacked
    return container / "raw"


@pytest.fixture(scope="module")
def twin_raw(volume, tmp_path_factory) -> Path:
    """Two identical channels."""
    return _write_channels(volume, tmp_path_factory.mktemp("twin") / "twin.zarr", lambda d: d)


@pytest.fixture(scope="module")
def two_channel_raw(volume, tmp_path_factory) -> Path:
    """The raw and its inverse: two channels that differ everywhere."""
    container = tmp_path_factory.mktemp("two") / "two.zarr"
    return _write_channels(volume, container, lambda d: 255 - d)


def _config(volume: Path, raw: Path, **trainer) -> dict:
    config = experiment_dict(volume, **trainer)
    config["data"]["train"][0]["raw"] = str(raw)
    return config


@pytest.mark.parametrize("fuse", [True, False])
def test_augments_transform_every_channel_alike(volume, twin_raw, tmp_path, fuse):
    config = _config(volume, twin_raw, augments=AUGMENTS, fuse_augments=fuse)
    run = TrainingRun(parse_config(config), tmp_path / "run", "cpu")
    run.prepare(resume=False)
    assert run.model.in_channels == 2
    single = experiment_dict(volume, augments=AUGMENTS, fuse_augments=fuse)
    reference = TrainingRun(parse_config(single), tmp_path / "single", "cpu")
    reference.prepare(resume=False)
    for seed in range(3):
        raw = run.trainer.pipeline.request_sample(seed)["raw"]
        assert raw.shape == (2, 36, 36, 36)
        assert raw[0].std() > 0.01
        np.testing.assert_array_equal(raw[0], raw[1])
        # each channel is augmented as a single-channel raw would be with the same seed
        alone = reference.trainer.pipeline.request_sample(seed)["raw"]
        np.testing.assert_allclose(raw[:1], alone, atol=1e-6)


def test_two_channel_raw_trains_snapshots_and_predicts(volume, two_channel_raw, tmp_path):
    config = _config(volume, two_channel_raw, snapshot_interval=2, batch_size=1, max_steps=2)
    run = TrainingRun(parse_config(config), tmp_path / "run", "cpu")
    run.prepare(resume=False)
    run.train(progress=False)
    snapshot = open_ds(level_path(tmp_path / "run" / "snapshots.zarr" / "2" / "raw"))
    assert snapshot.shape == (2, 36, 36, 36) and snapshot.voxel_size == Coordinate(8, 8, 8)
    data = snapshot[snapshot.roi]
    np.testing.assert_allclose(data[0] + data[1], 1.0, atol=1e-6)  # raw and its inverse
    checkpoint = sorted((tmp_path / "run" / "checkpoints").glob("iteration_*.pt"))[-1]

    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(config))
    output = tmp_path / "out.zarr" / "pred"
    roi = "16,32,48:320,320,320"  # 2 blocks of 20 output voxels per axis
    predict(config_path, checkpoint, str(two_channel_raw), str(output), roi=roi, progress=False)
    prediction = open_ds(level_path(output))
    assert prediction.shape == (3, 40, 40, 40)
    # the network sees both channels: one forward pass over the same input agrees
    raw = open_ds(str(two_channel_raw))
    inner = raw[raw.roi][:, :36, :36, :36].astype(np.float32) / 255.0
    with torch.no_grad():
        expected = torch.sigmoid(run.model.eval()(torch.from_numpy(inner)[None]))[0].numpy()
    np.testing.assert_allclose(prediction[:][:, 8:28, 8:28, 8:28], expected, atol=1e-5)


def test_checkpoint_of_another_channel_count_is_one_line_exit_2(
    volume, two_channel_raw, tmp_path, capsys
):
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(experiment_dict(volume)))
    config = load_config(config_path)
    model = build_model(config.model, 1, 3)
    checkpoint = save_checkpoint(tmp_path, 1, {"model": model.state_dict(), "iteration": 1})
    output = tmp_path / "out.zarr" / "pred"
    code = main(
        [
            "predict",
            str(config_path),
            "--checkpoint",
            str(checkpoint),
            "--input",
            str(two_channel_raw),
            "--output",
            str(output),
            "--no-progress",
        ]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1
    assert str(checkpoint) in lines[0] and str(two_channel_raw) in lines[0]
    assert "1 input channel" in lines[0] and "has 2" in lines[0]
    assert not output.exists()


@pytest.mark.parametrize("fuse", [True, False])
def test_noise_is_drawn_independently_per_channel(volume, twin_raw, tmp_path, fuse):
    # identical channels, augmented alike, differ only by their own noise fields
    noise = {"type": "noise", "mode": "gaussian", "var": 0.01, "clip": False}
    config = _config(volume, twin_raw, augments=[*AUGMENTS[:3], noise], fuse_augments=fuse)
    run = TrainingRun(parse_config(config), tmp_path / "run", "cpu")
    run.prepare(resume=False)
    raw = run.trainer.pipeline.request_sample(5)["raw"]
    difference = raw[0] - raw[1]
    # the difference of two independent N(0, 0.01) fields: std sqrt(0.02)
    assert difference.std() == pytest.approx(np.sqrt(0.02), rel=0.05)
    assert abs(np.corrcoef(difference[:-1].ravel(), difference[1:].ravel())[0, 1]) < 0.05
