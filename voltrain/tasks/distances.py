"""Signed distances to object boundaries, tanh-scaled (positive inside objects)."""

from __future__ import annotations

from typing import Literal

import gunpowder as gp
import torch
from pydantic import Field

from voltrain.nodes.distance_target import DistanceTarget
from voltrain.tasks.base import Task, TaskConfig, register_task, weighted_mean


@register_task("distances")
class DistancesTaskConfig(TaskConfig):
    """Predict tanh(d / scale) of the signed distance d of each voxel to its boundary.

    d is in world units (the labels' voxel size, anisotropic as it is), positive inside
    objects and negative in background; each object has its own boundary, so touching
    objects are separated. With ``num_classes``, gt holds class ids and each foreground
    class has a channel measuring the boundary of its region. Predictions are tanh of the
    logits, in [-1, 1]; a voxel is inside where the prediction is > 0.
    """

    type: Literal["distances"] = "distances"
    scale: float = Field(gt=0, description="world units: the target is tanh(distance / scale)")
    context: float | None = Field(
        None,
        gt=0,
        description="world units of labels read beyond each sample, so that distances up "
        "to it are exact at the sample's border; distances are clipped to it "
        "(default: 3 * scale, where tanh is 0.995)",
    )
    num_classes: int | None = Field(
        None,
        ge=2,
        description="unset: gt holds objects, one channel; else gt holds class ids "
        "0..num_classes-1 (0 background) and each foreground class gets a channel with the "
        "distance to its region's boundary",
    )
    mask_distances: bool = Field(
        True,
        description="weigh 0 the voxels whose distance reaches masked-out voxels (a "
        "closer boundary could lie there)",
    )

    def build(self) -> DistancesTask:
        return DistancesTask(self)


class DistancesTask(Task):
    """Runtime twin of ``DistancesTaskConfig``: MSE on tanh(logits)."""

    lower_is_better = frozenset({"distance_error"})
    value_range = (-1.0, 1.0)

    def __init__(self, config: DistancesTaskConfig):
        self.config = config
        self.num_channels = 1 if config.num_classes is None else config.num_classes - 1
        self.context = config.context if config.context is not None else 3 * config.scale

    def target_node(
        self,
        gt_key: gp.ArrayKey,
        mask_key: gp.ArrayKey | None,
        target_key: gp.ArrayKey,
        weight_key: gp.ArrayKey,
    ) -> gp.BatchFilter:
        return DistanceTarget(
            gt_key,
            mask_key,
            target_key,
            weight_key,
            self.config.scale,
            self.context,
            self.config.mask_distances,
            self.config.num_classes,
        )

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        return weighted_mean((torch.tanh(logits) - target) ** 2, weight)

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        """tanh: predictions in [-1, 1], on the target's scale."""
        return torch.tanh(logits)

    def metric(
        self, prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> dict[str, float]:
        """Over voxels with weight > 0: ``sign_accuracy``, the fraction where prediction
        and target agree on inside (> 0) or outside, and ``distance_error``, the mean
        absolute difference of prediction and target (lower is better). NaN without such
        voxels.
        """
        considered = weight > 0
        total = int(considered.sum())
        if total == 0:
            return {"sign_accuracy": float("nan"), "distance_error": float("nan")}
        agree = ((prediction > 0) == (target > 0)) & considered
        error = (prediction - target).abs()[considered].double().sum()
        return {"sign_accuracy": int(agree.sum()) / total, "distance_error": float(error) / total}
