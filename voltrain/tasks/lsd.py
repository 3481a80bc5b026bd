"""Local shape descriptors: per voxel, ten statistics of its object's shape around it."""

from __future__ import annotations

import math
from typing import Literal

import gunpowder as gp
import torch
from pydantic import Field, field_validator

from voltrain.config import StrictModel
from voltrain.nodes.lsd_target import NUM_LSD_CHANNELS, LsdTarget
from voltrain.tasks.base import Task, TaskConfig, register_task, weighted_mean


class LsdOptions(StrictModel):
    """How local shape descriptors are computed (shared by ``lsd`` and ``affinities+lsd``)."""

    sigma: float | list[float] = Field(
        description="gaussian window's standard deviation, world units: one value or (z, y, x)"
    )
    downsample: int | Literal["auto"] = Field(
        "auto",
        description="compute on every n-th voxel per axis (faster, coarser); auto: 2 on "
        "axes where sigma spans 5 voxels or more, else 1",
    )
    background_weight: bool = Field(
        False, description="also train background (label 0) voxels, to all-zero descriptors"
    )

    @field_validator("sigma")
    @classmethod
    def _check_sigma(cls, sigma: float | list[float]) -> list[float]:
        values = [sigma] * 3 if isinstance(sigma, int | float) else list(sigma)
        if len(values) != 3:
            raise ValueError(f"expected one value or 3 (z, y, x), got {sigma}")
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"must be positive world units, got {sigma}")
        return [float(v) for v in values]

    @field_validator("downsample")
    @classmethod
    def _check_downsample(cls, downsample: int | str) -> int | str:
        if downsample != "auto" and not 1 <= downsample <= 8:
            raise ValueError(f"expected 'auto' or 1 to 8, got {downsample}")
        return downsample

    def lsd_node(
        self,
        gt_key: gp.ArrayKey,
        mask_key: gp.ArrayKey | None,
        target_key: gp.ArrayKey,
        weight_key: gp.ArrayKey,
    ) -> LsdTarget:
        """The node adding the descriptors and their weight."""
        return LsdTarget(
            gt_key,
            mask_key,
            target_key,
            weight_key,
            self.sigma,
            None if self.downsample == "auto" else self.downsample,
            self.background_weight,
        )


def lsd_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Squared error of sigmoid(logits) against the descriptors, weighted mean."""
    return weighted_mean((torch.sigmoid(logits) - target) ** 2, weight)


def lsd_metric(
    prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> dict[str, float]:
    """``lsd_mse``: weighted mean squared error of the descriptors; NaN without weight."""
    total = float(weight.sum())
    if total == 0:
        return {"lsd_mse": float("nan")}
    return {"lsd_mse": float((weight * (prediction - target) ** 2).sum()) / total}


@register_task("lsd")
class LsdTaskConfig(TaskConfig, LsdOptions):
    """Predict the 10 local shape descriptors (Sheridan et al. 2022) with a sigmoid and an
    MSE loss."""

    type: Literal["lsd"] = "lsd"

    def build(self) -> LsdTask:
        return LsdTask(self)


class LsdTask(Task):
    """Runtime twin of ``LsdTaskConfig``."""

    def __init__(self, config: LsdTaskConfig):
        self.config = config
        self.num_channels = NUM_LSD_CHANNELS

    def target_node(
        self,
        gt_key: gp.ArrayKey,
        mask_key: gp.ArrayKey | None,
        target_key: gp.ArrayKey,
        weight_key: gp.ArrayKey,
    ) -> gp.BatchFilter:
        return self.config.lsd_node(gt_key, mask_key, target_key, weight_key)

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        return lsd_loss(logits, target, weight)

    def metric(
        self, prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> dict[str, float]:
        return lsd_metric(prediction, target, weight)
