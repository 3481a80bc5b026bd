"""Semantic classes (e.g. organelles): one softmax channel per class, cross-entropy."""

from __future__ import annotations

from typing import Literal

import gunpowder as gp
import torch
from pydantic import Field, model_validator

from voltrain.nodes.multiclass_target import MulticlassTarget
from voltrain.tasks.base import Task, TaskConfig, register_task, weighted_mean


@register_task("multiclass")
class MulticlassTaskConfig(TaskConfig):
    """Predict one of ``num_classes`` classes per voxel: gt holds class ids 0..K-1 (0 is
    background, the data's ``background`` label read as 0), and ``ignore_label``."""

    type: Literal["multiclass"] = "multiclass"
    num_classes: int = Field(ge=2, description="classes, background (0) included")
    class_weights: list[float] | None = Field(
        None, description="loss weight of each class, one per class (default: all 1)"
    )
    ignore_label: int | None = Field(
        None, description="gt id whose voxels carry no loss (e.g. 255 for unlabelled)"
    )

    @model_validator(mode="after")
    def _check_classes(self) -> MulticlassTaskConfig:
        weights = self.class_weights
        if weights is not None:
            if len(weights) != self.num_classes:
                raise ValueError(
                    f"class_weights: {len(weights)} weights for num_classes "
                    f"{self.num_classes}; give one per class"
                )
            if min(weights) < 0 or not sum(weights) > 0:
                raise ValueError(f"class_weights: must be >= 0, not all 0, got {weights}")
        if self.ignore_label is not None and 0 <= self.ignore_label < self.num_classes:
            raise ValueError(
                f"ignore_label: {self.ignore_label} is one of the classes "
                f"0..{self.num_classes - 1}; use an id outside them"
            )
        return self

    def build(self) -> MulticlassTask:
        return MulticlassTask(self)


class MulticlassTask(Task):
    """Runtime twin of ``MulticlassTaskConfig``.

    The target is one-hot (K, z, y, x); the weight is per voxel (1, z, y, x): the class
    weight of the voxel's class, 0 where masked out or ``ignore_label``. The loss is the
    cross-entropy averaged with those weights, as ``torch.nn.functional.cross_entropy``
    with ``weight=class_weights`` and ``ignore_index=ignore_label`` averages it.
    """

    def __init__(self, config: MulticlassTaskConfig):
        self.config = config
        self.num_channels = config.num_classes
        self.class_weights = config.class_weights or [1.0] * config.num_classes

    def target_node(
        self,
        gt_key: gp.ArrayKey,
        mask_key: gp.ArrayKey | None,
        target_key: gp.ArrayKey,
        weight_key: gp.ArrayKey,
    ) -> gp.BatchFilter:
        return MulticlassTarget(
            gt_key,
            mask_key,
            target_key,
            weight_key,
            self.class_weights,
            self.config.ignore_label,
        )

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        log_probabilities = torch.log_softmax(logits, dim=1)
        per_voxel = -(target * log_probabilities).sum(dim=1, keepdim=True)
        return weighted_mean(per_voxel, weight)

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over the class channels: probabilities that sum to 1 per voxel."""
        return torch.softmax(logits, dim=1)

    def metric(
        self, prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> dict[str, float]:
        """Over voxels with weight > 0, classes by argmax: ``accuracy``, ``dice_<k>`` of
        every class k and ``mean_dice`` over the foreground classes 1..K-1. A class absent
        from both prediction and target has dice 1; all are NaN without weighted voxels.
        """
        considered = (weight > 0).any(dim=1)
        predicted = prediction.argmax(dim=1)[considered]
        actual = target.argmax(dim=1)[considered]
        total = predicted.numel()
        names = [f"dice_{k}" for k in range(self.num_channels)]
        if total == 0:
            nan = float("nan")
            return {"accuracy": nan, "mean_dice": nan, **dict.fromkeys(names, nan)}
        dice = {}
        for k, name in enumerate(names):
            overlap = 2 * int(((predicted == k) & (actual == k)).sum())
            sizes = int((predicted == k).sum()) + int((actual == k).sum())
            dice[name] = overlap / sizes if sizes else 1.0
        foreground = [dice[name] for name in names[1:]]
        accuracy = int((predicted == actual).sum()) / total
        return {"accuracy": accuracy, "mean_dice": sum(foreground) / len(foreground), **dice}
