"""Binary foreground segmentation: predict gt > 0 per voxel."""

from __future__ import annotations

from typing import Literal

import gunpowder as gp
import torch

from voltrain.nodes.binary_target import BinaryTarget
from voltrain.tasks.balance import DEFAULT_BALANCE_CLIP, BalanceClip
from voltrain.tasks.base import Task, TaskConfig, register_task, thresholded_counts, weighted_mean


@register_task("binary")
class BinaryTaskConfig(TaskConfig):
    """Predict foreground (gt > 0) with one sigmoid channel and a BCE loss."""

    type: Literal["binary"] = "binary"
    balance_weights: bool = True
    balance_clip: BalanceClip = DEFAULT_BALANCE_CLIP

    def build(self) -> BinaryTask:
        return BinaryTask(self)


class BinaryTask(Task):
    """Runtime twin of ``BinaryTaskConfig``."""

    def __init__(self, config: BinaryTaskConfig):
        self.config = config
        self.num_channels = 1

    def target_node(
        self,
        gt_key: gp.ArrayKey,
        mask_key: gp.ArrayKey | None,
        target_key: gp.ArrayKey,
        weight_key: gp.ArrayKey,
    ) -> gp.BatchFilter:
        return BinaryTarget(
            gt_key,
            mask_key,
            target_key,
            weight_key,
            self.config.balance_weights,
            self.config.balance_clip,
        )

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        per_voxel = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, reduction="none"
        )
        return weighted_mean(per_voxel, weight)

    def metric(
        self, prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> dict[str, float]:
        """Dice (F1) and accuracy of prediction > 0.5 over voxels with weight > 0.

        Both are NaN when no voxel has weight; dice is 1 when neither side has foreground.
        """
        counts = thresholded_counts(prediction, target, weight)
        total = sum(counts.values())
        if total == 0:
            return {"dice": float("nan"), "accuracy": float("nan")}
        overlap, disagreement = 2 * counts["tp"], counts["fp"] + counts["fn"]
        dice = overlap / (overlap + disagreement) if overlap + disagreement else 1.0
        return {"dice": dice, "accuracy": (counts["tp"] + counts["tn"]) / total}
