"""GunpowderTrainer.iterate(): stats, learning, chunked calls, snapshots."""

from __future__ import annotations

import numpy as np
import torch
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds

from tests.helpers import experiment_dict
from voltrain.experiment import parse_config
from voltrain.run import TrainingRun


def _run(container, out_dir, task=None, **trainer) -> TrainingRun:
    raw = experiment_dict(container, **trainer)
    if task is not None:
        raw["task"] = task
    run = TrainingRun(parse_config(raw), out_dir, "cpu")
    run.prepare(resume=False)
    return run


def _losses(run: TrainingRun, n: int) -> list[float]:
    with run.trainer:
        return [s.loss for s in run.trainer.iterate(n, run.model, run.optimizer, "cpu")]


def test_iterate_yields_one_stats_per_iteration(volume, tmp_path):
    run = _run(volume, tmp_path / "run")
    with run.trainer:
        stats = list(run.trainer.iterate(3, run.model, run.optimizer, "cpu"))
    assert [s.iteration for s in stats] == [1, 2, 3]
    for s in stats:
        assert np.isfinite(s.loss) and s.grad_norm >= 0 and s.learning_rate == 0.001
        assert 0 <= s.data_time <= s.time


def test_loss_falls_on_a_learnable_toy(volume, tmp_path):
    task = {"type": "affinities", "balance_weights": False}
    run = _run(volume, tmp_path / "run", task, learning_rate=0.003, batch_size=1, min_masked=0.5)
    losses = _losses(run, 32)
    assert np.mean(losses[-8:]) < 0.9 * np.mean(losses[:8])


def test_chunked_iterate_matches_one_call(volume, tmp_path):
    whole = _losses(_run(volume, tmp_path / "a"), 4)
    run = _run(volume, tmp_path / "b")
    chunked = _losses(run, 2) + _losses(run, 2)
    assert chunked == whole


def test_gradient_is_clipped_on_the_device(volume, tmp_path):
    run = _run(volume, tmp_path / "run", clipping={"mode": "global_norm", "max_norm": 1e-3})
    with run.trainer:
        before = [p.detach().clone() for p in run.model.parameters()]
        stats = next(run.trainer.iterate(1, run.model, run.optimizer, "cpu"))
    # Adam normalises the step, so check the clipped gradient itself.
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in run.model.parameters()])
    )
    assert stats.grad_norm > 1e-3 and float(norm) <= 1e-3 * 1.01
    assert any(not torch.equal(b, p) for b, p in zip(before, run.model.parameters(), strict=True))


def test_snapshots_hold_every_array_placed_in_world_units(volume, tmp_path):
    run = _run(volume, tmp_path / "run", snapshot_interval=2, batch_size=1)
    _losses(run, 2)
    group = tmp_path / "run" / "snapshots.zarr" / "2"
    names = {"raw", "gt", "mask", "target", "weight", "prediction", "gradient"}
    arrays = {name: open_ds(str(group / name / "s0")) for name in names}
    for array in arrays.values():
        assert array.voxel_size == Coordinate(8, 8, 8)
    assert arrays["raw"].shape == (36, 36, 36)
    assert arrays["prediction"].shape == (3, 20, 20, 20)
    assert arrays["gradient"].shape == (3, 20, 20, 20)
    # The output sits at the centre of the raw: context of 8 voxels on each side.
    assert arrays["gt"].roi.offset == arrays["raw"].roi.offset + Coordinate(64, 64, 64)
    # Without augments, the snapshot's gt is the source labels at the snapshot's offset.
    labels = open_ds(str(volume / "labels"))
    gt = arrays["gt"]
    np.testing.assert_array_equal(gt[gt.roi], labels[Roi(gt.roi.offset, gt.roi.shape)])
    prediction = arrays["prediction"][arrays["prediction"].roi]
    assert prediction.min() >= 0 and prediction.max() <= 1
    compressors = __import__("zarr").open(str(group / "raw" / "s0")).compressors
    assert compressors, "snapshots must be compressed"


ELASTIC = {
    "type": "elastic",
    "control_point_spacing": [40, 40, 40],
    "jitter_sigma": [8, 8, 8],
    "rotate": True,
}


def test_deform_on_device_trains_on_the_resampled_raw(volume, tmp_path):
    # The workers hand over the uint8 source box and the map; the trainer resamples raw on
    # its device. Same sample seeds, so the result matches the in-worker path closely.
    runs = {}
    for on_device in (False, True):
        run = _run(
            volume,
            tmp_path / f"run{on_device}",
            batch_size=1,
            snapshot_interval=1,
            augments=[ELASTIC],
            deform_on_device=on_device,
        )
        runs[on_device] = _losses(run, 1)
        raw = open_ds(str(tmp_path / f"run{on_device}" / "snapshots.zarr" / "1" / "raw" / "s0"))
        assert raw.shape == (36, 36, 36)
        runs[(on_device, "raw")] = raw[raw.roi]
    np.testing.assert_allclose(runs[(True, "raw")], runs[(False, "raw")], atol=1e-4)
    np.testing.assert_allclose(runs[True], runs[False], rtol=1e-4)
