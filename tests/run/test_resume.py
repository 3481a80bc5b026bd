"""A run killed with SIGKILL mid-training and resumed matches an uninterrupted run bitwise:
every logged loss, gradient norm and learning rate, the snapshots and the final weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import zarr

from tests.helpers import experiment_dict
from tests.helpers.train_process import (
    metric_rows,
    run_training,
    start_and_kill,
)

ITERATIONS = 14


def _config(volume, write_config) -> Path:
    raw = experiment_dict(volume)
    raw["trainer"].pop("max_steps")
    raw["trainer"].update(
        batch_size=1,
        max_steps=ITERATIONS,
        log_every=1,
        checkpoint_interval=3,
        snapshot_interval=5,
        augments=[{"type": "simple"}, {"type": "intensity", "p": 0.5}],
        optimizer={"type": "adamw", "weight_decay": 0.01},
        lr_schedule={"type": "cosine", "warmup_iterations": 3},
        clipping={"mode": "adaptive"},
        gradient_noise={"eta": 0.001},
    )
    return write_config(raw)


def test_killed_and_resumed_run_matches_an_uninterrupted_one_bitwise(
    volume, write_config, tmp_path
):
    config = _config(volume, write_config)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_training(config, whole)
    rows_at_kill = start_and_kill(config, killed)
    assert rows_at_kill < ITERATIONS
    run_training(config, killed, "--resume")

    expected, resumed = metric_rows(whole), metric_rows(killed)
    assert [r["iteration"] for r in resumed] == list(range(1, ITERATIONS + 1))
    for key in ("loss", "grad_norm", "learning_rate"):
        assert [r[key] for r in resumed] == [r[key] for r in expected], key
    for iteration in (5, 10):
        for name in ("raw", "target", "prediction", "gradient"):
            a = zarr.open_array(str(whole / "snapshots.zarr" / str(iteration) / name / "s0"))[:]
            b = zarr.open_array(str(killed / "snapshots.zarr" / str(iteration) / name / "s0"))[:]
            np.testing.assert_array_equal(a, b, err_msg=f"{iteration}/{name}")
    final = f"checkpoints/iteration_{ITERATIONS:08d}.pt"
    a = torch.load(whole / final, weights_only=True)
    b = torch.load(killed / final, weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
