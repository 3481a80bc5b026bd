"""Optimizers and learning-rate schedules: the right optimizer, the expected learning rates,
and bad combinations named as config errors."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import experiment_dict
from voltrain.errors import ConfigError
from voltrain.experiment import parse_config
from voltrain.optim import (
    CosineScheduleConfig,
    ExponentialSweep,
    PolyScheduleConfig,
    StepScheduleConfig,
    apply_learning_rate,
    build_optimizer,
)


def _config(volume, **trainer):
    raw = experiment_dict(volume)
    raw["trainer"].pop("max_steps")
    raw["trainer"].update(trainer)
    return parse_config(raw)


def _schedule(volume, schedule, **trainer):
    config = _config(volume, lr_schedule=schedule, **trainer).trainer
    return config.lr_schedule.build(config.target_iteration(0))


def test_warmup_rises_linearly_then_the_constant_rate_holds(volume):
    schedule = _schedule(volume, {"type": "constant", "warmup_iterations": 10}, max_steps=50)
    assert [schedule.factor(n) for n in (0, 4, 9, 10, 49)] == [0.1, 0.5, 1.0, 1.0, 1.0]


def test_cosine_after_warmup_reaches_min_lr_at_the_horizon(volume):
    cosine = {"type": "cosine", "warmup_iterations": 10, "min_lr_factor": 0.1}
    schedule = _schedule(volume, cosine, max_steps=110)
    assert schedule.factor(9) == 1.0
    assert schedule.factor(10) == pytest.approx(1.0)
    assert schedule.factor(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: cos = 0
    assert schedule.factor(110) == pytest.approx(0.1)
    assert schedule.factor(500) == pytest.approx(0.1)


def test_poly_and_step_schedules_at_known_iterations():
    poly = PolyScheduleConfig(power=2.0).build(100)
    assert poly.factor(0) == 1.0 and poly.factor(50) == pytest.approx(0.25)
    assert poly.factor(100) == 0.0
    step = StepScheduleConfig(step_size=10, gamma=0.5, warmup_iterations=4).build(None)
    assert [step.factor(n) for n in (3, 4, 13, 14, 24)] == [1.0, 1.0, 1.0, 0.5, 0.25]


def test_total_iterations_overrides_the_training_horizon():
    schedule = CosineScheduleConfig(total_iterations=20).build(horizon=1000)
    assert schedule.factor(20) == pytest.approx(0.0)


def test_learning_rate_is_set_from_each_groups_initial_rate():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 1.0}])
    apply_learning_rate(optimizer, 0.5)
    apply_learning_rate(optimizer, 0.25)
    assert [g["lr"] for g in optimizer.param_groups] == [0.025, 0.25]


def test_exponential_sweep_spans_its_range():
    sweep = ExponentialSweep(1e-3, min_lr=1e-6, max_lr=1.0, num=7)
    rates = [sweep.learning_rate(k) for k in range(7)]
    assert rates[0] == pytest.approx(1e-6) and rates[-1] == pytest.approx(1.0)
    assert rates[3] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("optimizer", "kind", "fused"),
    [
        ({"type": "adam"}, torch.optim.Adam, True),
        ({"type": "adamw", "weight_decay": 0.01}, torch.optim.AdamW, True),
        ({"type": "radam"}, torch.optim.RAdam, False),
        ({"type": "sgd", "momentum": 0.9, "nesterov": True}, torch.optim.SGD, True),
    ],
)
def test_each_optimizer_is_built_as_configured(volume, optimizer, kind, fused):
    config = _config(volume, optimizer=optimizer).trainer
    model = torch.nn.Linear(2, 2)
    built = build_optimizer(config.optimizer, model.parameters(), 0.01)
    assert type(built) is kind
    assert bool(built.param_groups[0].get("fused")) == fused
    assert built.param_groups[0]["lr"] == 0.01
    if kind is torch.optim.SGD:
        assert built.param_groups[0]["nesterov"] and built.param_groups[0]["momentum"] == 0.9


BAD = {
    "steps and max_steps": ({"steps": 10, "max_steps": 10}, r"trainer.steps and trainer.max_steps"),
    "unknown optimizer": (
        {"optimizer": {"type": "adamax"}},
        r"trainer.optimizer: .*'adamax'",
    ),
    "nesterov without momentum": (
        {"optimizer": {"type": "sgd", "momentum": 0, "nesterov": True}},
        r"trainer.optimizer.*nesterov needs momentum",
    ),
    "warm-up longer than training": (
        {"max_steps": 100, "lr_schedule": {"type": "cosine", "warmup_iterations": 100}},
        r"trainer.lr_schedule.warmup_iterations \(100\) must be shorter than training",
    ),
    "unknown schedule": (
        {"lr_schedule": {"type": "exp"}},
        r"trainer.lr_schedule: .*'exp'",
    ),
    "step without step_size": (
        {"lr_schedule": {"type": "step"}},
        r"trainer.lr_schedule.step_size: required key is missing",
    ),
    "key of another schedule": (
        {"lr_schedule": {"type": "cosine", "power": 2}},
        r"trainer.lr_schedule.power: unknown key",
    ),
    "negative multiplier": (
        {"gradient_multipliers": {"head.*": -1}},
        r"trainer.gradient_multipliers",
    ),
    "early stopping without validation": (
        {"early_stopping": {"patience": 2}, "validation_interval": 0},
        r"trainer.early_stopping needs trainer.validation_interval",
    ),
    # Never released, so the old names are not carried: they are unknown keys.
    "old name iterations": ({"iterations": 5}, r"trainer.iterations: unknown key"),
    "old name max_norm": ({"max_norm": 0.5}, r"trainer.max_norm: unknown key"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_combinations_are_config_errors_naming_the_key(volume, case):
    trainer, expected = BAD[case]
    with pytest.raises(ConfigError, match=expected):
        _config(volume, **trainer)
