"""``Every``: checkpoints and snapshots are due on one schedule."""

from __future__ import annotations

import torch

from voltrain.run.checkpoint_callbacks import CheckpointSchedule
from voltrain.run.snapshot import SnapshotSchedule
from voltrain.trainers.stats import TrainingIterationStats


def _stats(iteration: int) -> TrainingIterationStats:
    return TrainingIterationStats(
        iteration=iteration, time=0.0, data_time=0.0, learning_rate=0.1,
        loss_tensor=torch.tensor(1.0),
    )  # fmt: skip


def test_checkpoints_are_written_every_interval_iterations():
    written = []
    schedule = CheckpointSchedule(lambda: written.append(len(written)), interval=3)
    for iteration in range(1, 10):
        schedule.on_step_end(_stats(iteration))
    assert len(written) == 3  # iterations 3, 6, 9


def test_checkpoints_by_time_are_written_when_the_time_has_passed():
    written = []
    schedule = CheckpointSchedule(lambda: written.append(1), interval=0, seconds=1e-9)
    schedule.on_step_end(_stats(1))
    assert written == [1]


def test_snapshots_are_asked_for_exactly_at_their_interval(tmp_path):
    schedule = SnapshotSchedule(tmp_path / "snapshots.zarr", interval=4)
    assert [i for i in range(1, 13) if schedule.wants_snapshot(i)] == [4, 8, 12]
    schedule.on_step_end(_stats(4))  # nothing was kept for it: nothing is written
    assert not (tmp_path / "snapshots.zarr").exists()
