"""Callbacks: early stopping on a validation metric, the time limit, and the hooks a user's
callback receives, from Python and from the YAML config."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import experiment_dict
from voltrain.callbacks import Callback, EarlyStopping, Timer
from voltrain.experiment import parse_config
from voltrain.run import train
from voltrain.trainers.stats import TrainingIterationStats


def _stats(iteration: int, validation: dict | None = None) -> TrainingIterationStats:
    return TrainingIterationStats(
        iteration=iteration,
        time=0.0,
        data_time=0.0,
        learning_rate=0.1,
        loss_tensor=torch.tensor(1.0),
        validation=validation,
    )


def _decisions(callback, values, metric="validation_loss") -> list[bool]:
    return [callback.on_step_end(_stats(i, {metric: v})) for i, v in enumerate(values, 1)]


def test_early_stopping_waits_patience_validations_without_improvement():
    stop = EarlyStopping(patience=2, min_delta=0.05)
    # 0.88 improves on 0.9 by less than min_delta, so it does not reset the count.
    assert _decisions(stop, [1.0, 0.9, 0.88, 0.7, 0.69, 0.8]) == [
        False,
        False,
        False,
        False,
        False,
        True,
    ]


def test_early_stopping_in_max_mode_and_ignoring_steps_without_validation():
    stop = EarlyStopping(metric="validation_dice", patience=1, mode="max")
    assert not stop.on_step_end(_stats(1))
    assert _decisions(stop, [0.5, 0.6, 0.55], "validation_dice") == [False, False, True]


def test_early_stopping_state_round_trips():
    stop = EarlyStopping(patience=3)
    _decisions(stop, [1.0, 1.1, 1.2])
    again = EarlyStopping(patience=3)
    again.load_state_dict(stop.state_dict())
    assert again.on_step_end(_stats(4, {"validation_loss": 1.3}))


def _raw(volume, **trainer) -> dict:
    raw = experiment_dict(volume)
    raw["trainer"].pop("max_steps")
    raw["trainer"].update({"batch_size": 1, "max_steps": 20, **trainer})
    raw["data"]["validate"] = raw["data"]["train"]
    return raw


def test_early_stopping_from_yaml_ends_the_run_with_a_checkpoint(volume, tmp_path):
    # No change counts as an improvement: the second validation stops the run.
    early = {"patience": 1, "min_delta": 1e9}
    config = parse_config(
        _raw(volume, validation_interval=2, validation_samples=1, early_stopping=early)
    )
    result = train(config, tmp_path / "run", device="cpu", progress=False)
    assert result.stopped_early and result.iteration == 4
    assert result.checkpoint.name == "iteration_00000004.pt"


def test_time_limit_stops_after_the_first_step(volume, tmp_path):
    config = parse_config(_raw(volume, time_limit=1e-6))
    result = train(config, tmp_path / "run", device="cpu", progress=False)
    assert result.stopped_early and result.iteration == 1


def test_timer_reports_time_and_iterations():
    timer = Timer()
    timer.on_train_begin(None)
    assert not any(timer.on_step_end(_stats(i)) for i in (1, 2))
    timer.on_train_end(None)
    assert timer.iterations == 2 and timer.elapsed >= 0


class _Recorder(Callback):
    def __init__(self):
        self.events: list[tuple] = []

    def on_train_begin(self, trainer) -> None:
        self.events.append(("begin", trainer.iteration))

    def on_snapshot(self, iteration, path, arrays) -> None:
        self.events.append(("snapshot", iteration, path.exists(), arrays["prediction"].shape))

    def on_checkpoint(self, iteration, path) -> None:
        self.events.append(("checkpoint", iteration, path.exists()))

    def on_train_end(self, trainer) -> None:
        self.events.append(("end", trainer.iteration))


def test_a_users_callback_sees_snapshots_checkpoints_begin_and_end(volume, tmp_path):
    config = parse_config(
        _raw(volume, max_steps=3, snapshot_interval=2, checkpoint_interval=2, validation_interval=0)
    )
    recorder = _Recorder()
    train(config, tmp_path / "run", device="cpu", progress=False, callbacks=[recorder])
    assert recorder.events == [
        ("begin", 0),
        ("snapshot", 2, True, (3, 20, 20, 20)),
        ("checkpoint", 2, True),
        ("end", 3),
        ("checkpoint", 3, True),
    ]


@pytest.mark.parametrize("bad", [{"patience": 0}, {"mode": "lowest"}])
def test_bad_early_stopping_config_names_the_key(volume, bad):
    from voltrain.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.early_stopping"):
        parse_config(_raw(volume, early_stopping=bad))
