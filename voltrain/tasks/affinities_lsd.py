"""Affinities and local shape descriptors as one multitask (``affinities+lsd``)."""

from __future__ import annotations

from typing import Literal

import gunpowder as gp
import torch
from pydantic import Field

from voltrain.nodes.lsd_target import NUM_LSD_CHANNELS
from voltrain.nodes.stack_targets import StackTargets
from voltrain.tasks.affinities import AffinitiesTask, AffinitiesTaskConfig
from voltrain.tasks.base import Task, register_task
from voltrain.tasks.lsd import LsdOptions, lsd_loss, lsd_metric


@register_task("affinities+lsd")
class AffinitiesLsdTaskConfig(AffinitiesTaskConfig, LsdOptions):
    """Predict affinities (channels 0 .. n-1, one per ``neighborhood`` offset) and the 10
    local shape descriptors after them; segmentation reads the affinity channels."""

    type: Literal["affinities+lsd"] = "affinities+lsd"
    lsd_weight: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="loss = affinity loss + lsd_weight × LSD loss"
    )

    def build(self) -> AffinitiesLsdTask:
        return AffinitiesLsdTask(self)


class AffinitiesLsdTask(Task):
    """Runtime twin of ``AffinitiesLsdTaskConfig``: the affinities task's target, loss and
    metric on the first channels, the LSDs' on the last ten."""

    def __init__(self, config: AffinitiesLsdTaskConfig):
        self.config = config
        self.affinities = AffinitiesTask(config)
        self.num_affinities = self.affinities.num_channels
        self.num_channels = self.num_affinities + NUM_LSD_CHANNELS

    def target_node(
        self,
        gt_key: gp.ArrayKey,
        mask_key: gp.ArrayKey | None,
        target_key: gp.ArrayKey,
        weight_key: gp.ArrayKey,
    ) -> gp.Pipeline:
        parts = {
            name: (gp.ArrayKey(f"{target_key}_{name}"), gp.ArrayKey(f"{weight_key}_{name}"))
            for name in ("AFFINITIES", "LSD")
        }
        affinities = self.affinities.target_node(gt_key, mask_key, *parts["AFFINITIES"])
        lsd = self.config.lsd_node(gt_key, mask_key, *parts["LSD"])
        targets, weights = zip(*parts.values(), strict=True)
        return affinities + lsd + StackTargets(targets, weights, target_key, weight_key)

    def _split(self, *tensors: torch.Tensor):
        """(affinity part, LSD part) of each (B, C, z, y, x) tensor."""
        n = self.num_affinities
        return [t[:, :n] for t in tensors], [t[:, n:] for t in tensors]

    def loss(
        self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        affinities, lsd = self._split(logits, target, weight)
        return self.affinities.loss(*affinities) + self.config.lsd_weight * lsd_loss(*lsd)

    def metric(
        self, prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
    ) -> dict[str, float]:
        """``affinity_accuracy`` of the affinity channels and ``lsd_mse`` of the LSDs."""
        affinities, lsd = self._split(prediction, target, weight)
        return {**self.affinities.metric(*affinities), **lsd_metric(*lsd)}
