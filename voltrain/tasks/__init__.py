"""Training tasks: what the network predicts and how it is scored."""

from typing import Annotated

from pydantic import Field

from voltrain.tasks.affinities import AffinitiesTask, AffinitiesTaskConfig
from voltrain.tasks.affinities_lsd import AffinitiesLsdTask, AffinitiesLsdTaskConfig
from voltrain.tasks.base import Task, TaskConfig
from voltrain.tasks.binary import BinaryTask, BinaryTaskConfig
from voltrain.tasks.lsd import LsdTask, LsdTaskConfig

TaskConfigs = Annotated[
    AffinitiesTaskConfig | BinaryTaskConfig | LsdTaskConfig | AffinitiesLsdTaskConfig,
    Field(discriminator="type"),
]
"""Any task config, chosen by its ``type`` key."""

__all__ = [
    "AffinitiesLsdTask",
    "AffinitiesLsdTaskConfig",
    "AffinitiesTask",
    "AffinitiesTaskConfig",
    "BinaryTask",
    "BinaryTaskConfig",
    "LsdTask",
    "LsdTaskConfig",
    "Task",
    "TaskConfig",
    "TaskConfigs",
]
