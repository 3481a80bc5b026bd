"""What a network learns to predict: the task config and its runtime twin.

A ``TaskConfig`` is validated data; ``config.build()`` returns the ``Task`` that builds the
training target from labels (a gunpowder node), scores logits against it (the loss), turns
logits into predictions (the activation) and summarises predictions (the metrics).

A task joins the ``task.type`` names with the ``@register_task("name")`` decorator, or as an
entry point of an installed package in the ``voltrain.tasks`` group::

    [project.entry-points."voltrain.tasks"]
    focal_binary = "my_package.tasks:FocalBinaryTaskConfig"
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import gunpowder as gp
import torch

from voltrain.config import StrictModel
from voltrain.registry import Registry


class TaskConfig(StrictModel):
    """Validated parameters of a task; subclasses set ``type`` to a ``Literal`` name."""

    type: str

    def build(self) -> Task:
        """Return the runtime task described by this config."""
        raise NotImplementedError(f"task type '{self.type}' does not implement build()")

    def affinity_channels(self) -> list[int]:
        """The output channels that hold affinities, one per ``neighborhood`` offset in
        order; empty when the task predicts none. Segmentation reads only these."""
        return []


TASKS: Registry[TaskConfig] = Registry("task", TaskConfig, "voltrain.tasks")
"""The task types by name; ``register_task`` adds to it."""


def register_task(name: str) -> Callable[[type[TaskConfig]], type[TaskConfig]]:
    """Class decorator registering a ``TaskConfig`` subclass under ``task.type: name``."""
    return TASKS.register(name)


def registered_tasks() -> dict[str, type[TaskConfig]]:
    """All task types known now: built-ins, decorated classes and entry points."""
    return TASKS.known()


def parse_task(data: Any, where: str = "task") -> TaskConfig:
    """Validate a task section, choosing its class by ``type``; an unknown or missing type
    is a ``ConfigError`` naming ``where`` and the known types."""
    return TASKS.parse(data, where)


def weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(weight * values) / sum(weight), and 0 (not NaN) where all weights are 0."""
    return (weight * values).sum() / weight.sum().clamp(min=1e-6)


class Task(ABC):
    """The runtime side of a task.

    Attributes:
        num_channels: channels of the target, and so of the network's output.
        lower_is_better: names of ``metric``'s results where smaller is better (picked
            with ``min`` as ``trainer.validation.metric``); the others are maximised.
        value_range: the (low, high) of targets and activated predictions.
    """

    num_channels: int
    lower_is_better: frozenset[str] = frozenset()
    value_range: tuple[float, float] = (0.0, 1.0)

    @abstractmethod
    def target_node(
        self,
        gt_key: gp.ArrayKey,
        mask_key: gp.ArrayKey | None,
        target_key: gp.ArrayKey,
        weight_key: gp.ArrayKey,
    ) -> gp.BatchFilter:
        """The node (or chain of nodes) adding float32 ``target`` and ``weight``
        (channels, z, y, x) arrays."""

    @abstractmethod
    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """Scalar loss: the per-voxel loss averaged with ``weight`` (see ``weighted_mean``)."""

    def best_mode(self, validation) -> str:
        """``min`` or ``max``: which ``validation.metric`` is best (``trainer.validation``);
        ``validation.best`` if given, else ``min`` for the loss and ``lower_is_better``."""
        name = validation.metric_key.removeprefix("validation_")
        if validation.best is None and name in self.lower_is_better:
            return "min"
        return validation.best_mode

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        """Turn logits into predictions in ``value_range`` (sigmoid: [0, 1])."""
        return torch.sigmoid(logits)

    @abstractmethod
    def metric(
        self, prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> dict[str, float]:
        """Named scores of activated ``prediction`` against ``target`` where weight > 0."""


def thresholded_counts(
    prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> dict[str, int]:
    """True/false positives/negatives of prediction > 0.5 over voxels with weight > 0."""
    considered = weight > 0
    predicted = (prediction > 0.5) & considered
    actual = (target > 0.5) & considered
    true_positive = int((predicted & actual).sum())
    false_positive = int((predicted & ~actual).sum())
    false_negative = int((~predicted & actual).sum())
    total = int(considered.sum())
    true_negative = total - true_positive - false_positive - false_negative
    return {"tp": true_positive, "fp": false_positive, "fn": false_negative, "tn": true_negative}
