"""``Every``: the one way a run writes something into its run directory on a schedule.

Checkpoints (``CheckpointSchedule``) and snapshots (``SnapshotSchedule``) are both callbacks
of this kind: due every ``interval`` iterations and/or every ``seconds`` seconds, and then
``write(stats)`` is called after the step.

With several ranks, a write may be collective (a checkpoint compares the ranks' weights
first, see ``voltrain.distributed.verify_replicas``), so every rank must find it due at the
same iteration. By iteration they do anyway; by time, rank 0's clock decides, read at
logging iterations only.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from voltrain import distributed
from voltrain.callbacks import Callback

if TYPE_CHECKING:
    # The type only: the trainers import these callbacks.
    from voltrain.trainers.stats import TrainingIterationStats


class Every(Callback):
    """Calls ``write(stats)`` every ``interval`` iterations and/or every ``seconds`` seconds.

    Args:
        interval: iterations between writes (0: none by iteration).
        seconds: seconds between writes (None: none by time).
    """

    def __init__(self, interval: int = 0, seconds: float | None = None):
        self.interval = interval
        self.seconds = seconds
        self.last_write = time.monotonic()

    def due_at(self, iteration: int) -> bool:
        """Whether ``iteration`` is due by the iteration count (known before the step)."""
        return self.interval > 0 and iteration % self.interval == 0

    def _due_by_time(self, stats: TrainingIterationStats) -> bool:
        if self.seconds is None:
            return False
        if not distributed.is_distributed():
            return time.monotonic() - self.last_write >= self.seconds
        if not stats.log_due:
            return False
        return distributed.main_decides(time.monotonic() - self.last_write >= self.seconds)

    def on_train_begin(self, trainer: Any) -> None:
        self.last_write = time.monotonic()

    def on_step_end(self, stats: TrainingIterationStats) -> bool:
        if self.due_at(stats.iteration) or self._due_by_time(stats):
            self.write(stats)
            self.last_write = time.monotonic()
        return False

    def write(self, stats: TrainingIterationStats) -> None:
        """Write the output of ``stats.iteration``."""
        raise NotImplementedError
