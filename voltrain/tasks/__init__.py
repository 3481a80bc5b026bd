"""Training tasks: what the network predicts and how it is scored.

Importing this package registers the built-in tasks (affinities, binary, distances,
multiclass, lsd, affinities+lsd); a task of one's
own joins with ``@register_task`` or the ``voltrain.tasks`` entry-point group.
"""

from typing import Annotated

from pydantic import BeforeValidator, SerializeAsAny

from voltrain.tasks.affinities import AffinitiesTask, AffinitiesTaskConfig
from voltrain.tasks.affinities_lsd import AffinitiesLsdTask, AffinitiesLsdTaskConfig
from voltrain.tasks.base import (
    TASKS,
    Task,
    TaskConfig,
    parse_task,
    register_task,
    registered_tasks,
)
from voltrain.tasks.binary import BinaryTask, BinaryTaskConfig
from voltrain.tasks.distances import DistancesTask, DistancesTaskConfig
from voltrain.tasks.lsd import LsdTask, LsdTaskConfig
from voltrain.tasks.multiclass import MulticlassTask, MulticlassTaskConfig

TaskConfigs = Annotated[SerializeAsAny[TaskConfig], BeforeValidator(TASKS.validate)]
"""Any registered task config, chosen by its ``type`` key (a pydantic field type)."""

__all__ = [
    "AffinitiesLsdTask",
    "AffinitiesLsdTaskConfig",
    "LsdTask",
    "LsdTaskConfig",
    "TASKS",
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
    "parse_task",
    "register_task",
    "registered_tasks",
]
