"""Training tasks: what the network predicts and how it is scored."""

from typing import Annotated

from pydantic import Field

from voltrain.tasks.affinities import AffinitiesTask, AffinitiesTaskConfig
from voltrain.tasks.base import Task, TaskConfig
from voltrain.tasks.binary import BinaryTask, BinaryTaskConfig
from voltrain.tasks.distances import DistancesTask, DistancesTaskConfig
from voltrain.tasks.multiclass import MulticlassTask, MulticlassTaskConfig

TaskConfigs = Annotated[
    AffinitiesTaskConfig | BinaryTaskConfig | DistancesTaskConfig | MulticlassTaskConfig,
    Field(discriminator="type"),
]
"""Any task config, chosen by its ``type`` key."""

__all__ = [
    "AffinitiesTask",
    "AffinitiesTaskConfig",
    "BinaryTask",
    "BinaryTaskConfig",
    "DistancesTask",
    "DistancesTaskConfig",
    "MulticlassTask",
    "MulticlassTaskConfig",
    "Task",
    "TaskConfig",
    "TaskConfigs",
]
