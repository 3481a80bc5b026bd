"""The trainer contract: a config, its runtime twin, and the stats of one iteration."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from pydantic import Field, field_validator

from voltrain.config import StrictModel


class TrainerConfig(StrictModel):
    """Base of every trainer config: what all trainers share.

    Attributes:
        type: which trainer (selects the config class in YAML).
        name: a name for this trainer setup, shown in logs.
        batch_size: samples per iteration.
        learning_rate: the optimizer's learning rate.
        input_shape: network input in voxels (z, y, x).
        seed: seeds the model's initial weights and every sample.
        iterations: the iteration to train up to when the CLI gives none.
        max_norm: clip the gradient norm to this (None: no clipping).
        norm_type: the p of the gradient p-norm (``inf`` for the max norm).
        log_every: read the loss back and log it every this many iterations.
        checkpoint_interval: save a checkpoint every this many iterations (0: only at the end).
    """

    type: str
    name: str = "default"
    batch_size: int = Field(1, gt=0)
    learning_rate: float = Field(1e-4, gt=0)
    input_shape: list[int] = Field(default_factory=lambda: [68, 68, 68])
    seed: int = Field(0, ge=0)
    iterations: int = Field(1000, gt=0)
    max_norm: float | None = Field(1.0, gt=0)
    norm_type: float = Field(2.0, gt=0)
    log_every: int = Field(10, gt=0)
    checkpoint_interval: int = Field(500, ge=0)

    @field_validator("input_shape")
    @classmethod
    def _three_positive(cls, value: list[int]) -> list[int]:
        if len(value) != 3 or any(v <= 0 for v in value):
            raise ValueError(f"must be three positive voxel counts (z, y, x), got {value}")
        return value

    def verify(self) -> tuple[bool, str]:
        """Check the config for combinations the field validators cannot see."""
        if self.norm_type != math.inf and self.norm_type < 1:
            return False, f"trainer.norm_type must be >= 1 or inf, got {self.norm_type}"
        return True, "ok"


@dataclass
class TrainingIterationStats:
    """What one training iteration reports.

    ``loss`` and ``grad_norm`` stay on the training device until they are read: reading them
    syncs with the device, so a caller reads them only when it logs.
    """

    iteration: int
    time: float
    data_time: float
    learning_rate: float
    loss_tensor: torch.Tensor = field(repr=False)
    grad_norm_tensor: torch.Tensor | None = field(default=None, repr=False)

    @property
    def loss(self) -> float:
        return float(self.loss_tensor)

    @property
    def grad_norm(self) -> float | None:
        return None if self.grad_norm_tensor is None else float(self.grad_norm_tensor)

    def as_dict(self) -> dict:
        """All figures as plain floats (syncs with the device)."""
        return {
            "iteration": self.iteration,
            "loss": self.loss,
            "grad_norm": self.grad_norm,
            "learning_rate": self.learning_rate,
            "time": self.time,
            "data_time": self.data_time,
        }


class Trainer(ABC):
    """Runs training iterations on batches from a provider it builds itself.

    Use as a context manager: entering starts the data loaders, leaving stops them::

        trainer.build_batch_provider(datasets, model, task, snapshot_container)
        with trainer:
            for stats in trainer.iterate(100, model, optimizer, device):
                ...
    """

    iteration: int = 0
    batch_size: int
    learning_rate: float

    @abstractmethod
    def create_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """The optimizer for ``model``'s parameters."""

    @abstractmethod
    def iterate(
        self,
        num_iterations: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
    ) -> Iterator[TrainingIterationStats]:
        """Run ``num_iterations`` steps from ``self.iteration``, yielding stats after each."""

    @abstractmethod
    def can_train(self, datasets: Sequence) -> bool:
        """Whether this trainer can train on ``datasets``."""

    @abstractmethod
    def build_batch_provider(self, datasets: Sequence, model, task, snapshot_container=None):
        """Prepare the batch provider for ``datasets``; checks the data before training."""

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:  # noqa: B027 (optional hook)
        return None
