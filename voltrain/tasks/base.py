"""What a network learns to predict: the task config and its runtime twin.

A ``TaskConfig`` is validated data; ``config.build()`` returns the ``Task`` that builds the
training target from labels (a gunpowder node), scores logits against it (the loss), turns
logits into predictions (the activation) and summarises predictions (the metrics).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import gunpowder as gp
import torch

from voltrain.config import StrictModel


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


def weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(weight * values) / sum(weight), and 0 (not NaN) where all weights are 0."""
    return (weight * values).sum() / weight.sum().clamp(min=1e-6)


class Task(ABC):
    """The runtime side of a task.

    Attributes:
        num_channels: channels of the target, and so of the network's output.
    """

    num_channels: int

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

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        """Turn logits into predictions in [0, 1]."""
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
