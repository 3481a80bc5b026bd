"""Callbacks: code that a trainer calls at fixed points of training.

A trainer calls, on every callback in order:

- ``on_train_begin(trainer)`` when it is entered (``with trainer:``),
- ``wants_snapshot(iteration)`` before every step; if any returns True, the trainer keeps
  the first sample's arrays of that step in ``stats.snapshot``,
- ``on_step_end(stats)`` after every iteration; returning True asks the trainer to stop
  (``trainer.stop_requested`` is then set and ``iterate`` ends after yielding ``stats``),
- ``on_snapshot(iteration, path, arrays)`` after writing a snapshot,
- ``on_checkpoint(iteration, path)`` after a checkpoint is written,
- ``on_train_end(trainer)`` when it is left.

Callbacks with a ``state_key`` have their ``state_dict()`` saved in checkpoints and restored
on resume, so a resumed run stops where an uninterrupted one would.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from voltrain.config import StrictModel

if TYPE_CHECKING:
    # Only the stats record: the trainer itself is passed as ``Any`` so that this contract
    # stays below the trainers that call it.
    from voltrain.trainers.stats import TrainingIterationStats

logger = logging.getLogger(__name__)


class Callback:
    """Base class: every hook does nothing; override the ones you need."""

    state_key: str | None = None

    def on_train_begin(self, trainer: Any) -> None:
        """Training starts (the trainer is entered)."""

    def wants_snapshot(self, iteration: int) -> bool:
        """Whether the step that produces ``iteration`` should keep its arrays for a
        snapshot (``stats.snapshot``); asked before the step."""
        return False

    def on_step_end(self, stats: TrainingIterationStats) -> bool:
        """An iteration ended; return True to stop training."""
        return False

    def on_snapshot(self, iteration: int, path: Path, arrays: Mapping[str, np.ndarray]) -> None:
        """A snapshot of ``arrays`` (first sample of the batch) was written to ``path``."""

    def on_checkpoint(self, iteration: int, path: Path) -> None:
        """A checkpoint was written to ``path``."""

    def on_train_end(self, trainer: Any) -> None:
        """Training ends (the trainer is left, normally or by an error)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""


class EarlyStoppingConfig(StrictModel):
    """Stop when a validation metric stops improving (``trainer.early_stopping``).

    Attributes:
        metric: a key of the validation results, e.g. ``validation_loss``.
        patience: validations without improvement before stopping.
        min_delta: the least change that counts as an improvement.
        mode: ``min`` if smaller is better, ``max`` if larger is.
    """

    metric: str = "validation_loss"
    patience: int = Field(5, gt=0)
    min_delta: float = Field(0.0, ge=0)
    mode: Literal["min", "max"] = "min"

    def build(self) -> EarlyStopping:
        return EarlyStopping(self.metric, self.patience, self.min_delta, self.mode)


class EarlyStopping(Callback):
    """Stops training after ``patience`` validations without an improvement of ``metric``
    by more than ``min_delta``.

    Args:
        metric: the validation result to watch (``stats.validation[metric]``).
        patience: validations without improvement before stopping.
        min_delta: the least change that counts as an improvement.
        mode: ``min`` if smaller is better, ``max`` if larger is.
    """

    def __init__(
        self,
        metric: str = "validation_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: Literal["min", "max"] = "min",
    ):
        self.metric = metric
        self.patience = patience
        self.min_delta = min_delta
        self.sign = 1.0 if mode == "min" else -1.0
        self.best = math.inf
        self.bad_validations = 0
        self.state_key = f"early_stopping:{metric}"

    def on_step_end(self, stats: TrainingIterationStats) -> bool:
        if not stats.validation or self.metric not in stats.validation:
            return False
        value = self.sign * float(stats.validation[self.metric])
        if value < self.best - self.min_delta:
            self.best = value
            self.bad_validations = 0
            return False
        self.bad_validations += 1
        if self.bad_validations >= self.patience:
            logger.warning(
                "early stopping at iteration %d: %s did not improve for %d validations",
                stats.iteration,
                self.metric,
                self.patience,
            )
            return True
        return False

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
        self.bad_validations = state["bad_validations"]


class Timer(Callback):
    """Measures training time, and stops training after ``max_seconds`` if given.

    Args:
        max_seconds: stop after this many seconds since the trainer was entered (None:
            never).

    Attributes:
        elapsed: seconds from ``on_train_begin`` to the last step (or the end).
        iterations: iterations run in that time.
    """

    def __init__(self, max_seconds: float | None = None):
        self.max_seconds = max_seconds
        self.start: float | None = None
        self.elapsed = 0.0
        self.iterations = 0

    def on_train_begin(self, trainer: Any) -> None:
        self.start = time.monotonic()
        self.iterations = 0

    def on_step_end(self, stats: TrainingIterationStats) -> bool:
        self.iterations += 1
        self.elapsed = time.monotonic() - (self.start or time.monotonic())
        if self.max_seconds is not None and self.elapsed >= self.max_seconds:
            logger.warning(
                "stopping at iteration %d: time limit of %g s reached",
                stats.iteration,
                self.max_seconds,
            )
            return True
        return False

    def on_train_end(self, trainer: Any) -> None:
        if self.start is not None:
            self.elapsed = time.monotonic() - self.start
        per_iteration = self.elapsed / self.iterations if self.iterations else math.nan
        logger.info(
            "trained %d iterations in %.1f s (%.3f s per iteration)",
            self.iterations,
            self.elapsed,
            per_iteration,
        )
