"""The callbacks that write a run's checkpoints: on a schedule and on a new best validation.

With several ranks, writing a checkpoint is a collective step, so every rank decides to
checkpoint at the same iteration (see ``voltrain.run.schedule``); by validation, the
results are the same on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from voltrain.callbacks import Callback
from voltrain.run.schedule import Every

if TYPE_CHECKING:
    # The type only: the trainers import these callbacks.
    from voltrain.trainers.stats import TrainingIterationStats


class CheckpointSchedule(Every):
    """Calls ``save`` every ``interval`` iterations and/or every ``seconds`` seconds, at
    the same iteration on every rank.

    Args:
        save: writes a checkpoint (on every rank; rank 0 writes the file).
        interval: iterations between checkpoints (0: none by iteration).
        seconds: seconds between checkpoints (None: none by time). With several ranks,
            rank 0's clock is read at logging iterations only.
    """

    def __init__(self, save: Callable[[], Any], interval: int = 0, seconds: float | None = None):
        super().__init__(interval, seconds)
        self.save = save

    def write(self, stats: TrainingIterationStats) -> None:
        self.save()


class BestValidation(Callback):
    """Calls ``save(results)`` whenever the validation ``metric`` reaches a new best.

    Args:
        save: writes the best checkpoint, given the validation results.
        metric: the validation result that decides, e.g. ``validation_dice``.
        mode: ``min`` if smaller is better, ``max`` if larger is. A value that is not
            finite is never the best.
    """

    state_key = "best_checkpoint"

    def __init__(
        self,
        save: Callable[[dict[str, float]], Any],
        metric: str = "validation_loss",
        mode: Literal["min", "max"] = "min",
    ):
        self.save = save
        self.metric = metric
        self.best = math.inf
        # ``best`` is kept as sign * value, so a smaller number is always better.
        self.sign = 1.0 if mode == "min" else -1.0

    def on_step_end(self, stats: TrainingIterationStats) -> bool:
        if stats.validation and self.metric in stats.validation:
            value = self.sign * float(stats.validation[self.metric])
            if math.isfinite(value) and value < self.best:
                self.best = value
                self.save(dict(stats.validation))
        return False

    def state_dict(self) -> dict:
        return {"best": self.best, "metric": self.metric, "sign": self.sign}

    def load_state_dict(self, state: dict) -> None:
        # A best of another metric (the config changed on resume) says nothing about this one.
        same = state.get("metric", "validation_loss") == self.metric
        if same and state.get("sign", 1.0) == self.sign:
            self.best = state["best"]
