"""Trainers: configs and their runtime twins that run training iterations."""

from typing import Annotated

from pydantic import Field

from voltrain.trainers.base import Trainer, TrainerConfig, TrainingBatch, TrainingIterationStats
from voltrain.trainers.dummy import DummyTrainer, DummyTrainerConfig
from voltrain.trainers.gunpowder import GunpowderTrainer, GunpowderTrainerConfig
from voltrain.trainers.semi_supervised import SemiSupervisedTrainer, SemiSupervisedTrainerConfig

TrainerConfigs = Annotated[
    GunpowderTrainerConfig | SemiSupervisedTrainerConfig | DummyTrainerConfig,
    Field(discriminator="type"),
]

__all__ = [
    "DummyTrainer",
    "DummyTrainerConfig",
    "GunpowderTrainer",
    "GunpowderTrainerConfig",
    "SemiSupervisedTrainer",
    "SemiSupervisedTrainerConfig",
    "Trainer",
    "TrainerConfig",
    "TrainerConfigs",
    "TrainingBatch",
    "TrainingIterationStats",
]
