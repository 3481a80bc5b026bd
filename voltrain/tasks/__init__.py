"""Training tasks: what the network predicts and how it is scored."""

from typing import Annotated

from pydantic import Field

from voltrain.tasks.affinities import AffinitiesTask, AffinitiesTaskConfig
from voltrain.tasks.base import Task, TaskConfig
from voltrain.tasks.binary import BinaryTask, BinaryTaskConfig

TaskConfigs = Annotated[AffinitiesTaskConfig | BinaryTaskConfig, Field(discriminator="type")]
"""Any task config, chosen by its ``type`` key."""

__all__ = [
    "AffinitiesTask",
    "AffinitiesTaskConfig",
    "BinaryTask",
    "BinaryTaskConfig",
    "Task",
    "TaskConfig",
    "TaskConfigs",
]
