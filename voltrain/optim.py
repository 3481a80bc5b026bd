"""Optimizers and learning-rate schedules: the ``trainer.optimizer`` and ``trainer.lr_schedule``
configs and what they build.

Adam, AdamW and SGD are built with ``fused=True``: their fused kernels take a ``found_inf``
flag on the device and skip the whole update when it is set, which is how a non-finite step
is skipped without a host sync (see ``voltrain.trainers.guarded_step``). RAdam has no fused
kernel; on CUDA it is built ``capturable`` so that its step counter lives on the device too.

A schedule is a pure function of the iteration: the learning rate of the step that produces
iteration ``n + 1`` is ``initial_lr * schedule.factor(n)``. Resuming at iteration ``n`` gives
the same learning rates as an uninterrupted run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Annotated, Literal

import torch
from pydantic import Field, field_validator, model_validator

from voltrain.config import StrictModel


class AdamConfig(StrictModel):
    """Adam (L2 weight decay), AdamW (decoupled weight decay) or RAdam (rectified Adam)."""

    type: Literal["adam", "adamw", "radam"] = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)

    @field_validator("betas")
    @classmethod
    def _betas_in_unit_interval(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):
            raise ValueError(f"both betas must lie in [0, 1), got {list(value)}")
        return value


class SGDConfig(StrictModel):
    """Stochastic gradient descent with (Nesterov) momentum."""

    type: Literal["sgd"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDConfig:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self


OptimizerConfigs = Annotated[AdamConfig | SGDConfig, Field(discriminator="type")]


def build_optimizer(
    config: AdamConfig | SGDConfig, parameters: Iterable[torch.nn.Parameter], lr: float
) -> torch.optim.Optimizer:
    """The optimizer ``config`` describes, over ``parameters``, at learning rate ``lr``."""
    parameters = list(parameters)
    on_cuda = any(p.device.type == "cuda" for p in parameters)
    if config.type == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
            fused=True,
        )
    common = dict(lr=lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)
    if config.type == "radam":
        return torch.optim.RAdam(parameters, capturable=on_cuda, **common)
    optimizer_class = torch.optim.AdamW if config.type == "adamw" else torch.optim.Adam
    return optimizer_class(parameters, fused=True, **common)


class _ScheduleConfig(StrictModel):
    """What every schedule shares: an optional linear warm-up.

    Attributes:
        warmup_iterations: the learning rate rises linearly from lr / warmup_iterations at
            the first iteration to lr at this iteration, then the schedule proper starts.
        total_iterations: where decaying schedules reach ``min_lr`` (default: the iteration
            the run trains up to).
    """

    type: str
    warmup_iterations: int = Field(0, ge=0)
    total_iterations: int | None = Field(None, gt=0)

    @property
    def needs_horizon(self) -> bool:
        return False

    def build(self, horizon: int | None) -> LRSchedule:
        if self.total_iterations is not None:
            horizon = self.total_iterations
        return LRSchedule(self, horizon)

    def decay(self, progress: float, steps_after_warmup: int) -> float:
        """The factor after warm-up; ``progress`` runs from 0 to 1 over the horizon."""
        return 1.0


class ConstantScheduleConfig(_ScheduleConfig):
    """The configured learning rate throughout (after the optional warm-up)."""

    type: Literal["constant"] = "constant"


class CosineScheduleConfig(_ScheduleConfig):
    """Half a cosine from lr down to ``min_lr`` at the horizon."""

    type: Literal["cosine"] = "cosine"
    min_lr_factor: float = Field(0.0, ge=0, le=1)

    @property
    def needs_horizon(self) -> bool:
        return True

    def decay(self, progress: float, steps_after_warmup: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.min_lr_factor + (1 - self.min_lr_factor) * cosine


class PolyScheduleConfig(_ScheduleConfig):
    """Polynomial decay ``(1 - progress) ** power`` from lr down to ``min_lr`` at the horizon."""

    type: Literal["poly"] = "poly"
    power: float = Field(0.9, gt=0)
    min_lr_factor: float = Field(0.0, ge=0, le=1)

    @property
    def needs_horizon(self) -> bool:
        return True

    def decay(self, progress: float, steps_after_warmup: int) -> float:
        return self.min_lr_factor + (1 - self.min_lr_factor) * (1 - progress) ** self.power


class StepScheduleConfig(_ScheduleConfig):
    """Multiply the learning rate by ``gamma`` every ``step_size`` iterations."""

    type: Literal["step"] = "step"
    step_size: int = Field(gt=0)
    gamma: float = Field(0.1, gt=0)

    def decay(self, progress: float, steps_after_warmup: int) -> float:
        return self.gamma ** (steps_after_warmup // self.step_size)


LRScheduleConfigs = Annotated[
    ConstantScheduleConfig | CosineScheduleConfig | PolyScheduleConfig | StepScheduleConfig,
    Field(discriminator="type"),
]


class LRSchedule:
    """The learning-rate factor of every iteration: warm-up, then the configured decay.

    ``horizon`` is the iteration where decaying schedules end; ``factor(n)`` is the factor of
    the step that produces iteration ``n + 1``.
    """

    def __init__(self, config: _ScheduleConfig, horizon: int | None):
        self.config = config
        self.horizon = horizon

    def factor(self, iteration: int) -> float:
        warmup = self.config.warmup_iterations
        if iteration < warmup:
            return (iteration + 1) / warmup
        after = iteration - warmup
        progress = 0.0
        if self.config.needs_horizon and self.horizon is not None:
            progress = min(1.0, after / max(1, self.horizon - warmup))
        return self.config.decay(progress, after)

    def state_dict(self) -> dict:
        return {"type": self.config.type, "horizon": self.horizon}


class ExponentialSweep:
    """Learning rates rising exponentially from ``min_lr`` to ``max_lr`` over ``num`` steps
    that start at iteration ``start`` (for the learning-rate finder)."""

    def __init__(self, base_lr: float, min_lr: float, max_lr: float, num: int, start: int = 0):
        self.base_lr = base_lr
        self.min_lr = min_lr
        self.max_lr = max_lr
        self.num = num
        self.start = start

    def learning_rate(self, iteration: int) -> float:
        position = min(max(iteration - self.start, 0), self.num - 1) / max(1, self.num - 1)
        return self.min_lr * (self.max_lr / self.min_lr) ** position

    def factor(self, iteration: int) -> float:
        return self.learning_rate(iteration) / self.base_lr

    def state_dict(self) -> dict:
        return {"type": "exponential_sweep", "horizon": self.start + self.num}


def apply_learning_rate(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Set every group's lr to its initial lr times ``factor``; returns the first group's."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor
    return optimizer.param_groups[0]["lr"]
