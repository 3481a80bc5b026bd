"""The shared step loop (``Trainer.iterate``), driven through the DummyTrainer: non-finite
steps skipped or fatal, schedules applied, callbacks able to stop, state round trips."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.helpers import experiment_dict
from voltrain.callbacks import Callback
from voltrain.errors import NanLossError
from voltrain.experiment import parse_config
from voltrain.models.unet import build_model

CPU = torch.device("cpu")


def _dummy(volume, **trainer):
    raw = experiment_dict(volume)
    raw["trainer"] = {
        "type": "dummy",
        "input_shape": [36, 36, 36],
        "batch_size": 1,
        "learning_rate": 0.01,
        "log_every": 1,
        "max_steps": 20,
        **trainer,
    }
    config = parse_config(raw)
    torch.manual_seed(0)
    model = build_model(config.model, 1, config.task.build().num_channels)
    runner = config.trainer.build()
    runner.build_batch_provider([], model, config.task)
    return runner, model, runner.create_optimizer(model)


def _poison(model, trainer, iterations: set[int]) -> None:
    """Make the network output NaN in the steps that produce ``iterations``."""

    def hook(module, inputs, output):
        if trainer.iteration + 1 in iterations:
            return output * float("nan")
        return None

    model.register_forward_hook(hook)


def _weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    "setup",
    [
        {"optimizer": {"type": "adam"}},
        {"optimizer": {"type": "radam"}, "clipping": {"mode": "adaptive"}},
        {"optimizer": {"type": "sgd"}, "amp": "fp16"},
    ],
    ids=["adam", "radam-adaptive", "sgd-fp16"],
)
def test_a_nan_step_is_skipped_with_the_weights_unchanged(volume, setup):
    trainer, model, optimizer = _dummy(volume, fail_on_nan_loss=False, **setup)
    _poison(model, trainer, {3})
    with trainer:
        list(trainer.iterate(2, model, optimizer, CPU))
        before = _weights(model)
        (bad,) = trainer.iterate(1, model, optimizer, CPU)
        assert _same(before, _weights(model))
        after = list(trainer.iterate(2, model, optimizer, CPU))
    assert not bad.finite and bad.skipped_steps == 1
    assert all(s.finite and s.skipped_steps == 1 for s in after)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not _same(before, _weights(model))


def test_fail_on_nan_loss_raises_at_the_logging_interval_naming_the_iteration(volume):
    trainer, model, optimizer = _dummy(volume, fail_on_nan_loss=True, log_every=4)
    _poison(model, trainer, {2})
    seen = []
    with trainer, pytest.raises(NanLossError, match="not finite at iteration 2"):
        for stats in trainer.iterate(8, model, optimizer, CPU):
            seen.append(stats.iteration)
    assert seen == [1, 2, 3] and trainer.iteration == 4


def test_iterate_applies_the_schedule_and_reports_its_rate(volume):
    schedule = {"type": "step", "step_size": 2, "gamma": 0.5, "warmup_iterations": 2}
    trainer, model, optimizer = _dummy(volume, lr_schedule=schedule)
    with trainer:
        rates = [s.learning_rate for s in trainer.iterate(6, model, optimizer, CPU)]
    assert rates == [0.005, 0.01, 0.01, 0.01, 0.005, 0.005]
    assert optimizer.param_groups[0]["lr"] == 0.005


class _StopAt(Callback):
    def __init__(self, iteration: int):
        self.iteration = iteration
        self.calls: list[str] = []

    def on_train_begin(self, trainer) -> None:
        self.calls.append("begin")

    def on_step_end(self, stats) -> bool:
        return stats.iteration >= self.iteration

    def on_train_end(self, trainer) -> None:
        self.calls.append("end")


def test_a_callback_stops_iterate_until_the_flag_is_reset(volume):
    trainer, model, optimizer = _dummy(volume)
    stop = _StopAt(3)
    trainer.add_callback(stop)
    with trainer:
        first = [s.iteration for s in trainer.iterate(10, model, optimizer, CPU)]
        assert trainer.stop_requested
        assert list(trainer.iterate(10, model, optimizer, CPU)) == []
        trainer.stop_requested = False
        stop.iteration = 5
        second = [s.iteration for s in trainer.iterate(10, model, optimizer, CPU)]
    assert first == [1, 2, 3] and second == [4, 5]
    assert stop.calls == ["begin", "end"]


def test_state_dict_round_trip_continues_identically(volume):
    config = {"clipping": {"mode": "adaptive"}, "gradient_noise": {"eta": 0.01}}
    trainer, model, optimizer = _dummy(volume, **config)
    with trainer:
        list(trainer.iterate(2, model, optimizer, CPU))
        state = copy.deepcopy((trainer.state_dict(), model.state_dict(), optimizer.state_dict()))
        expected = [s.loss for s in trainer.iterate(2, model, optimizer, CPU)]
    resumed, model2, optimizer2 = _dummy(volume, **config)
    model2.load_state_dict(state[1])
    optimizer2.load_state_dict(state[2])
    resumed.load_state_dict(state[0])
    with resumed:
        again = [s.loss for s in resumed.iterate(2, model2, optimizer2, CPU)]
    assert again == expected and resumed.iteration == 4
