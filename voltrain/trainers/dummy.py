"""A trainer on random data, for tests and dry runs of a model and task."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Literal

import torch

from voltrain.seeding import derive_seed
from voltrain.trainers.base import Trainer, TrainerConfig, TrainingIterationStats
from voltrain.trainers.step import train_step


class DummyTrainerConfig(TrainerConfig):
    """Config of the ``DummyTrainer``: random inputs and targets of the network's shapes."""

    type: Literal["dummy"] = "dummy"

    def build(self) -> DummyTrainer:
        return DummyTrainer(self)


class DummyTrainer(Trainer):
    """Runs real training steps on random batches; reads no data."""

    def __init__(self, config: DummyTrainerConfig):
        self.config = config
        self.iteration = 0
        self.batch_size = config.batch_size
        self.learning_rate = config.learning_rate
        self.task = None
        self.num_channels = 1
        self.output_shape: tuple[int, ...] | None = None

    def create_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=self.learning_rate)

    def can_train(self, datasets: Sequence) -> bool:
        return True

    def build_batch_provider(self, datasets, model, task, snapshot_container=None) -> None:
        self.task = task.build()
        self.num_channels = self.task.num_channels
        self.output_shape = tuple(model.output_shape(tuple(self.config.input_shape)))

    def _random_batch(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        generator = torch.Generator().manual_seed(derive_seed(self.config.seed, self.iteration))
        raw = torch.rand(self.batch_size, 1, *self.config.input_shape, generator=generator)
        target_shape = (self.batch_size, self.num_channels, *self.output_shape)
        target = (torch.rand(target_shape, generator=generator) > 0.5).float()
        weight = torch.ones(target_shape)
        return raw.to(device), target.to(device), weight.to(device)

    def iterate(
        self,
        num_iterations: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
    ) -> Iterator[TrainingIterationStats]:
        device = torch.device(device)
        for _ in range(num_iterations):
            start = time.perf_counter()
            raw, target, weight = self._random_batch(device)
            data_time = time.perf_counter() - start
            result = train_step(
                model,
                optimizer,
                self.task,
                raw,
                target,
                weight,
                self.config.max_norm,
                self.config.norm_type,
            )
            self.iteration += 1
            yield TrainingIterationStats(
                iteration=self.iteration,
                time=time.perf_counter() - start,
                data_time=data_time,
                learning_rate=optimizer.param_groups[0]["lr"],
                loss_tensor=result.loss,
                grad_norm_tensor=result.grad_norm,
            )
