"""RestartingLoader: a loader worker killed mid-run is replaced at the current iteration,
and training goes on with exactly the batches an uninterrupted run sees."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.helpers import experiment_dict
from voltrain.callbacks import Callback
from voltrain.experiment import parse_config
from voltrain.loader_restart import LoaderFailedError
from voltrain.run import TrainingRun


class _KillWorkerAt(Callback):
    """SIGKILLs the loader's worker processes after the given iterations."""

    def __init__(self, trainer, iterations: set[int]):
        self.trainer = trainer
        self.iterations = iterations
        self.killed: list[int] = []

    def on_step_end(self, stats) -> bool:
        if stats.iteration in self.iterations:
            for pid in self.trainer.batches.worker_pids():
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)
        return False


def _losses(out) -> list[float]:
    rows = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(row)["loss"] for row in rows]


def _run(volume, out, kill_at=(), **trainer):
    config = parse_config(experiment_dict(volume, batch_size=1, max_steps=5, **trainer))
    run = TrainingRun(config, out, "cpu")
    killer = _KillWorkerAt(run.trainer, set(kill_at))
    run.trainer.add_callback(killer)
    run.prepare(resume=False)
    try:
        run.train(progress=False)
    finally:
        run.lock.release()
    return run, killer


def test_a_killed_worker_is_replaced_with_the_same_batches_until_restarts_run_out(
    volume, tmp_path, caplog
):
    # Batches do not depend on the number of workers: 0 workers is the uninterrupted run.
    _run(volume, tmp_path / "plain", num_data_fetchers=0)
    out = tmp_path / "killed"
    with pytest.raises(LoaderFailedError, match="iteration 4 .*loader_restarts=1"):
        _run(volume, out, kill_at={2, 4}, num_data_fetchers=1, loader_restarts=1)
    assert "restarting the loader at iteration 2 (restart 1 of 1" in caplog.text
    # Killed after iteration 2 and restarted: iterations 3 and 4 trained on the same batches.
    assert _losses(out) == _losses(tmp_path / "plain")[:4]
