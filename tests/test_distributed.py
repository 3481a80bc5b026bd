"""Training on two CPU processes started by torchrun (gloo): the replicas stay identical,
the loss falls, a resumed run matches an uninterrupted one, ranks draw different samples
and skip non-finite steps together, only rank 0 writes into the run directory, and
diverged replicas are caught."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import experiment_dict
from voltrain.errors import ConfigError
from voltrain.experiment import load_config
from voltrain.run import train

ITERATIONS = 30
HALF = ITERATIONS // 2

# Started by torchrun on every rank: draws the first batches of its trainer's loader; trains
# with rank 1's network output poisoned from the second step on; then perturbs rank 1's
# weights and tries to checkpoint. Records go outside the run directory.
PROBE = """
import json, sys
from pathlib import Path
import torch
from voltrain import distributed
from voltrain.errors import NanLossError
from voltrain.experiment import load_config
from voltrain.run import TrainingRun

config, out, records = sys.argv[1:4]
run = TrainingRun(load_config(config), Path(out), "cpu")
run.prepare(resume=False)
rank = run.trainer.rank
batches = iter(run.trainer.loader(0))
offsets = [next(batches)["output_offset"].tolist() for _ in range(3)]
poisoned = [False]
run.model.register_forward_hook(lambda m, i, o: o * float("nan") if poisoned[0] else None)
nan_error = None
try:
    with run.trainer:
        for stats in run.trainer.iterate(3, run.model, run.optimizer, run.device):
            poisoned[0] = rank == 1
except NanLossError as caught:
    nan_error = str(caught)
poisoned[0] = False
checksums = distributed.verify_replicas(run.model, run.trainer.iteration)
run.trainer.fail_on_nan_loss = False
skipped = run.trainer.check_finite()
if rank == 1:
    with torch.no_grad():
        next(run.model.parameters()).add_(1e-4)
try:
    run.save_checkpoint()
    divergence = None
except distributed.ReplicaDivergenceError as caught:
    divergence = str(caught)
record = dict(
    offsets=offsets, nan_error=nan_error, skipped=skipped, iteration=run.trainer.iteration,
    checksums=checksums, divergence=divergence,
)
Path(records, f"rank{rank}.json").write_text(json.dumps(record))
distributed.teardown()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(*args: str) -> None:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VOLTRAIN_DIST_TIMEOUT": "120"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _train(config: Path, out: Path, *extra: str) -> None:
    _torchrun("-m", "voltrain", "train", str(config), "--out", str(out), "--no-progress", *extra)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _checkpoint(out: Path, iteration: int) -> dict:
    return torch.load(out / "checkpoints" / f"iteration_{iteration:08d}.pt", weights_only=True)


@pytest.fixture(scope="module")
def runs(volume, tmp_path_factory) -> tuple[Path, Path, Path]:
    """The config, a run of ITERATIONS on 2 ranks, and one of HALF resumed to ITERATIONS."""
    directory = tmp_path_factory.mktemp("distributed")
    raw = experiment_dict(
        volume,
        batch_size=1,
        learning_rate=0.003,
        min_masked=0.5,
        max_steps=ITERATIONS,
        checkpoint_interval=HALF,
        snapshot_interval=HALF,
        clipping={"mode": "adaptive"},
        gradient_noise={"eta": 0.001},
    )
    raw["task"] = {"type": "affinities", "balance_weights": False}
    config = directory / "experiment.yaml"
    config.write_text(json.dumps(raw))
    whole, split = directory / "whole", directory / "split"
    _train(config, whole)
    _train(config, split, "--iterations", str(HALF))
    _train(config, split, "--resume")
    return config, whole, split


def test_replicas_stay_identical_and_the_loss_falls(runs):
    _, whole, _ = runs
    for iteration in (HALF, ITERATIONS):
        state = _checkpoint(whole, iteration)
        assert state["world_size"] == 2 and state["voxel_size"] == [8, 8, 8]
        first, second = state["parameter_checksums"]
        assert first == second
    losses = [row["loss"] for row in _rows(whole)]
    assert np.mean(losses[-8:]) < 0.9 * np.mean(losses[:8])


def test_only_rank_0_writes_into_the_run_directory(runs):
    _, whole, _ = runs
    assert sorted(p.name for p in whole.iterdir()) == [
        ".voltrain.lock",
        "checkpoints",
        "config.yaml",
        "loss.png",
        "metrics.jsonl",
        "snapshots",
        "snapshots.zarr",
        "tensorboard",
    ]
    # Rank 1 writing too would duplicate rows and add an event file.
    assert [row["iteration"] for row in _rows(whole)] == list(range(1, ITERATIONS + 1))
    assert len(list((whole / "tensorboard").iterdir())) == 1
    assert sorted(p.name for p in (whole / "snapshots.zarr").iterdir() if p.is_dir()) == [
        str(HALF),
        str(ITERATIONS),
    ]


def test_a_resumed_run_matches_an_uninterrupted_one(runs):
    _, whole, split = runs
    expected, resumed = _rows(whole), _rows(split)
    assert [r["iteration"] for r in resumed] == list(range(1, ITERATIONS + 1))
    for key in ("loss", "grad_norm"):
        assert [r[key] for r in resumed] == [r[key] for r in expected], key
    a, b = _checkpoint(whole, ITERATIONS), _checkpoint(split, ITERATIONS)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_resuming_with_another_number_of_ranks_is_refused(runs):
    config, whole, _ = runs
    with pytest.raises(ConfigError, match="written by a run of 2 process"):
        train(load_config(config), whole, ITERATIONS + 1, "cpu", resume=True, progress=False)


def test_ranks_draw_different_samples_skip_together_and_divergence_is_caught(runs, tmp_path):
    config = runs[0]
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    out = tmp_path / "run"
    _torchrun(str(probe), str(config), str(out), str(tmp_path))
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for first, second in zip(records[0]["offsets"], records[1]["offsets"], strict=True):
        assert first != second
    for record in records:
        # A non-finite step on rank 1 alone is skipped by both ranks, which stop together.
        assert "not finite at iteration 2" in record["nan_error"]
        assert record["skipped"] == 1 and record["iteration"] == 2
        assert record["checksums"][0] == record["checksums"][1]
        assert "differs between ranks at iteration 2" in record["divergence"]
        assert "on rank 1" in record["divergence"]
    assert not (out / "checkpoints").exists()
