"""The semi-supervised trainer on real volumes: a config without ``data.unlabeled`` is a
one-line error (exit 2); the teacher follows the student by the EMA and stays put on a
skipped step; snapshots show the unlabeled views and the teacher's prediction in place;
a run killed with SIGKILL and resumed matches an uninterrupted one, teacher included."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from funlib.persistence import open_ds

from tests.helpers import experiment_dict
from tests.helpers.train_process import (
    metric_rows,
    run_training,
    start_and_kill,
    train_command,
    train_env,
)
from voltrain.cli import main
from voltrain.errors import ConfigError
from voltrain.experiment import load_config
from voltrain.run import TrainingRun
from voltrain.synthetic import make_synthetic_volume

ITERATIONS = 6


@pytest.fixture(scope="module")
def unlabeled(tmp_path_factory) -> Path:
    """A 48^3 volume from another seed; only its raw and mask are used."""
    container = tmp_path_factory.mktemp("unlabeled") / "unlabeled.zarr"
    make_synthetic_volume(
        container,
        shape=(48, 48, 48),
        voxel_size=(8, 8, 8),
        num_cells=12,
        mask_fraction=0.7,
        chunk_shape=(24, 24, 24),
        seed=5,
    )
    return container


def _config(volume: Path, unlabeled: Path | None, **trainer) -> dict:
    settings = dict(
        type="semi_supervised",
        batch_size=1,
        consistency_rampup=4,
        augments=[{"type": "simple"}, {"type": "intensity"}, {"type": "noise", "var": 0.001}],
    )
    config = experiment_dict(volume, **{**settings, **trainer})
    if unlabeled is not None:
        config["data"]["unlabeled"] = [
            {"raw": str(unlabeled / "raw"), "mask": str(unlabeled / "mask")}
        ]
    return config


def test_a_config_without_unlabeled_data_is_one_line_exit_2(volume, write_config, tmp_path, capsys):
    path = write_config(_config(volume, None))
    with pytest.raises(ConfigError, match="data.unlabeled"):
        load_config(path)
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.unlabeled" in err, err
    assert not out.exists()


def test_unlabeled_data_with_a_supervised_trainer_is_refused(volume, unlabeled, write_config):
    config = _config(volume, unlabeled)
    config["trainer"] = {k: v for k, v in config["trainer"].items() if k != "consistency_rampup"}
    config["trainer"]["type"] = "gunpowder"
    with pytest.raises(ConfigError, match="data.unlabeled: only trainer.type: semi_supervised"):
        load_config(write_config(config))


def _teacher(run: TrainingRun) -> list[torch.Tensor]:
    return [p.detach().clone() for p in run.trainer.teacher.model.parameters()]


def test_the_teacher_follows_the_student_and_ignores_a_skipped_step(
    volume, unlabeled, write_config, tmp_path
):
    config = _config(
        volume, unlabeled, ema_decay=0.9, ema_warmup=False, fail_on_nan_loss=False, log_every=4
    )
    run = TrainingRun(load_config(write_config(config)), tmp_path / "run", "cpu")
    run.prepare(resume=False)
    poisoned = [False]
    run.model.register_forward_hook(lambda m, i, o: o * float("nan") if poisoned[0] else None)
    teachers, students = [], []
    with run.trainer:
        for stats in run.trainer.iterate(4, run.model, run.optimizer, run.device):
            teachers.append(_teacher(run))
            students.append([p.detach().clone() for p in run.model.parameters()])
            poisoned[0] = stats.iteration == 1  # the second step is not finite
    assert run.trainer.check_finite() == 1
    # step 2 was skipped: neither the student nor the teacher moved
    assert all(torch.equal(a, b) for a, b in zip(teachers[0], teachers[1], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(students[0], students[1], strict=True))
    # step 3 was applied: teacher = 0.9 teacher + 0.1 student
    for old, new, student in zip(teachers[1], teachers[2], students[2], strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * student)
    assert not all(torch.equal(a, b) for a, b in zip(teachers[1], teachers[2], strict=True))


def test_killed_and_resumed_run_matches_an_uninterrupted_one(
    volume, unlabeled, write_config, tmp_path
):
    config = write_config(
        _config(
            volume,
            unlabeled,
            max_steps=ITERATIONS,
            checkpoint_interval=3,
            snapshot_interval=3,
            unlabeled_batch_size=2,
            pseudo_label_threshold=0.7,
        )
    )
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_training(config, whole)
    start_and_kill(config, killed)
    run_training(config, killed, "--resume")

    expected, resumed = metric_rows(whole), metric_rows(killed)
    assert [r["iteration"] for r in resumed] == list(range(1, ITERATIONS + 1))
    for key in ("loss", "grad_norm", "consistency_loss", "pseudo_label_loss", "consistency_ramp"):
        assert [r[key] for r in resumed] == [r[key] for r in expected], key
    # the ramp rises to 1 over consistency_rampup (4) iterations
    assert [r["consistency_ramp"] for r in expected][4:] == [1.0] * (ITERATIONS - 4)
    assert expected[0]["consistency_ramp"] == pytest.approx(math.exp(-5))
    final = f"checkpoints/iteration_{ITERATIONS:08d}.pt"
    a = torch.load(whole / final, weights_only=True)
    b = torch.load(killed / final, weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    teacher_a, teacher_b = a["trainer"]["teacher"], b["trainer"]["teacher"]
    assert teacher_a.keys() == a["model"].keys()
    assert all(torch.equal(teacher_a[k], teacher_b[k]) for k in teacher_a)
    assert not all(torch.equal(teacher_a[k], a["model"][k]) for k in teacher_a)
    for name in ("unlabeled_weak", "unlabeled_strong", "teacher_prediction"):
        for iteration in (3, 6):
            path = f"snapshots.zarr/{iteration}/{name}/s0"
            np.testing.assert_array_equal(
                zarr.open_array(str(whole / path))[:], zarr.open_array(str(killed / path))[:]
            )
    _check_snapshot_placement(whole / "snapshots.zarr" / "6")


def _check_snapshot_placement(group: Path) -> None:
    """The teacher's prediction, the student's and the mask cover the output region,
    centred in the weak view; the labeled arrays are there as before."""
    weak = open_ds(str(group / "unlabeled_weak" / "s0"))
    teacher = open_ds(str(group / "teacher_prediction" / "s0"))
    student = open_ds(str(group / "student_prediction" / "s0"))
    mask = open_ds(str(group / "unlabeled_mask" / "s0"))
    assert teacher.roi == student.roi == mask.roi
    assert weak.roi.contains(teacher.roi) and weak.roi.center == teacher.roi.center
    assert teacher.shape == (3, 20, 20, 20)  # one channel per affinity offset
    for name in ("raw", "gt", "prediction", "target"):
        assert (group / name / "s0").exists()


def test_two_ranks_train_one_student_and_one_teacher(volume, unlabeled, write_config, tmp_path):
    """Under torchrun (2 CPU ranks, gloo) the student's single forward over labeled and
    strong views keeps the replicas identical, and the teacher follows them."""
    config = write_config(_config(volume, unlabeled, max_steps=3, checkpoint_interval=3))
    out = tmp_path / "ddp"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        *train_command(config, out, "--no-progress")[1:],
    ]
    env = {**train_env(), "VOLTRAIN_DIST_TIMEOUT": "120"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    state = torch.load(out / "checkpoints" / "iteration_00000003.pt", weights_only=True)
    assert state["world_size"] == 2
    first, second = state["parameter_checksums"]
    assert first == second
    teacher = state["trainer"]["teacher"]
    assert teacher.keys() == state["model"].keys()
    assert not all(torch.equal(teacher[k], state["model"][k]) for k in teacher)
