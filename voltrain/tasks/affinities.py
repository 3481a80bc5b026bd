"""Affinities: for each voxel and offset, whether both voxels belong to the same object."""

from __future__ import annotations

from typing import Literal

import gunpowder as gp
import torch
from pydantic import Field, field_validator

from voltrain.nodes.affinity_target import AffinityTarget
from voltrain.tasks.balance import DEFAULT_BALANCE_CLIP, BalanceClip
from voltrain.tasks.base import Task, TaskConfig, register_task, thresholded_counts, weighted_mean


@register_task("affinities")
class AffinitiesTaskConfig(TaskConfig):
    """Predict one affinity channel per neighbourhood offset."""

    type: Literal["affinities"] = "affinities"
    neighborhood: list[list[int]] = Field(
        default_factory=lambda: [[-1, 0, 0], [0, -1, 0], [0, 0, -1]],
        min_length=1,
        description="(z, y, x) voxel offsets, one affinity channel each",
    )
    balance_weights: bool = True
    balance_clip: BalanceClip = DEFAULT_BALANCE_CLIP
    loss: Literal["bce", "mse"] = Field(
        "bce", description="bce: cross-entropy on logits; mse: squared error of the sigmoid"
    )

    @field_validator("neighborhood")
    @classmethod
    def _check_offsets(cls, neighborhood: list[list[int]]) -> list[list[int]]:
        for index, offset in enumerate(neighborhood):
            if len(offset) != 3:
                raise ValueError(f"offset {index}: expected 3 values (z, y, x), got {offset}")
            if not any(offset):
                raise ValueError(f"offset {index}: must not be [0, 0, 0]")
        if len({tuple(offset) for offset in neighborhood}) != len(neighborhood):
            raise ValueError(f"offsets must be distinct, got {neighborhood}")
        return neighborhood

    def build(self) -> AffinitiesTask:
        return AffinitiesTask(self)

    def affinity_channels(self) -> list[int]:
        return list(range(len(self.neighborhood)))


class AffinitiesTask(Task):
    """Runtime twin of ``AffinitiesTaskConfig``."""

    def __init__(self, config: AffinitiesTaskConfig):
        self.config = config
        self.num_channels = len(config.neighborhood)

    def target_node(
        self,
        gt_key: gp.ArrayKey,
        mask_key: gp.ArrayKey | None,
        target_key: gp.ArrayKey,
        weight_key: gp.ArrayKey,
    ) -> gp.BatchFilter:
        return AffinityTarget(
            gt_key,
            mask_key,
            target_key,
            weight_key,
            self.config.neighborhood,
            self.config.balance_weights,
            self.config.balance_clip,
        )

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        if self.config.loss == "bce":
            per_voxel = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, target, reduction="none"
            )
        else:
            per_voxel = (torch.sigmoid(logits) - target) ** 2
        return weighted_mean(per_voxel, weight)

    def metric(
        self, prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> dict[str, float]:
        """Fraction of affinities with weight > 0 where prediction > 0.5 matches the target.

        NaN when no affinity has weight.
        """
        counts = thresholded_counts(prediction, target, weight)
        total = sum(counts.values())
        correct = counts["tp"] + counts["tn"]
        return {"affinity_accuracy": correct / total if total else float("nan")}
