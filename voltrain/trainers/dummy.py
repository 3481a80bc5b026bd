"""A trainer on random data, for tests and dry runs of a model and task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from voltrain.models.base import network_config
from voltrain.seeding import derive_seed
from voltrain.trainers.base import Trainer, TrainingBatch
from voltrain.trainers.config import TrainerConfig


class DummyTrainerConfig(TrainerConfig):
    """Config of the ``DummyTrainer``: random inputs and targets of the network's shapes."""

    type: Literal["dummy"] = "dummy"

    def build(self) -> DummyTrainer:
        return DummyTrainer(self)


class DummyTrainer(Trainer):
    """Runs real training steps on random batches; reads no data.

    The batch of each iteration depends only on (seed, rank, iteration).
    """

    def __init__(self, config: DummyTrainerConfig):
        super().__init__(config)
        self.num_channels = 1
        self.output_shape: tuple[int, ...] | None = None

    def can_train(self, datasets: Sequence) -> bool:
        return True

    def build_batch_provider(self, datasets, model, task, snapshot_container=None) -> None:
        self.task = task.build()
        self.num_channels = self.task.num_channels
        shape = network_config(model).output_shape(tuple(self.config.input_shape))
        self.output_shape = tuple(shape)

    def _draw_batch(self, device: torch.device) -> TrainingBatch:
        generator = torch.Generator().manual_seed(
            derive_seed(self.config.seed, self.rank, self.iteration)
        )
        raw = torch.rand(self.batch_size, 1, *self.config.input_shape, generator=generator)
        target_shape = (self.batch_size, self.num_channels, *self.output_shape)
        target = (torch.rand(target_shape, generator=generator) > 0.5).float()
        weight = torch.ones(target_shape)
        return TrainingBatch(raw.to(device), target.to(device), weight.to(device))
