"""The trainer contract: a config, its runtime twin, and the stats of one iteration.

``Trainer`` holds the step loop every trainer shares; a subclass says where batches come
from (``_draw_batch``) and may write snapshots and validate.

With several ranks (torchrun), every rank runs the same loop on its own batches. Rank 0
alone writes snapshots and validates; its validation results are sent to every rank, so
callbacks see the same figures everywhere. A stop asked by a callback on any rank takes
effect on all ranks together, at the next logging or validating iteration.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from funlib.geometry import Coordinate

from voltrain import distributed
from voltrain.callbacks import Callback, Timer
from voltrain.errors import NanLossError
from voltrain.inference import InputConfig, merge_input
from voltrain.optim import apply_learning_rate, build_optimizer
from voltrain.profiling import StageProfile
from voltrain.trainers.config import TrainerConfig
from voltrain.trainers.stats import TrainingIterationStats
from voltrain.trainers.step import StepEngine, StepResult

__all__ = ["Trainer", "TrainerConfig", "TrainingBatch", "TrainingIterationStats"]

logger = logging.getLogger(__name__)


@dataclass
class TrainingBatch:
    """One batch on the training device, and what it came from on the host (for snapshots)."""

    raw: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    host: dict | None = None


class Trainer(ABC):
    """Runs training iterations on batches from a provider it builds itself.

    Use as a context manager: entering starts the data loaders and calls the callbacks'
    ``on_train_begin``, leaving stops them and calls ``on_train_end``::

        trainer.build_batch_provider(datasets, model, task, snapshot_container)
        optimizer = trainer.create_optimizer(model)
        with trainer:
            for stats in trainer.iterate(100, model, optimizer, device):
                ...

    Attributes:
        iteration: iterations done (the next step produces ``iteration + 1``).
        until: the iteration training ends at; sets the learning-rate schedule's horizon
            (default: from ``steps``/``max_steps`` when first entered).
        callbacks: called at every step, snapshot, checkpoint, start and end.
        stop_requested: set when a callback asked to stop; ``iterate`` then yields nothing
            more until it is reset to False.
        fail_on_nan_loss: from the config; raise ``NanLossError`` at the next logging
            interval after a non-finite step.
        input: the experiment's ``input`` section (normalisation, fixed intensity maps);
            set it before ``build_batch_provider``. ``raw_input()`` completes it with the
            trainer section's older keys.
        unlabeled: the experiment's ``data.unlabeled`` datasets (read by the
            semi-supervised trainer alone); set it before ``build_batch_provider``.
        segment: the experiment's ``segment`` section, which validation by segmentation
            (``trainer.validation.metric: voi``) segments with; None: its defaults.
        can_validate: whether ``build_validation_provider`` is implemented.
        voxel_size: the training data's voxel size, once the provider is built (None for
            a trainer that reads no data).
        units: the units of that voxel size (OME names), which snapshots carry; None
            where the data names none (snapshots then say nanometer).
        stage_profile: the data pipeline's per-stage timings when profiling is on, else
            None (see ``voltrain.profiling``).
    """

    iteration: int = 0
    batch_size: int
    learning_rate: float
    can_validate: bool = False

    def __init__(self, config: TrainerConfig):
        self.config = config
        self.iteration = 0
        self.batch_size = config.batch_size
        self.learning_rate = config.learning_rate
        self.task = None
        self.until: int | None = None
        self.lr_schedule = None
        self.fail_on_nan_loss = config.fail_on_nan_loss
        self.stop_requested = False
        self.validator = None
        self.input = InputConfig()
        self.segment = None
        self.unlabeled: list = []
        self.voxel_size: Coordinate | None = None
        self.units: list[str] | None = None
        self.stage_profile: StageProfile | None = None
        self.callbacks: list[Callback] = []
        if config.early_stopping is not None:
            self.callbacks.append(config.early_stopping.build())
        self.callbacks.append(Timer(config.time_limit))
        self._engine: StepEngine | None = None
        self._pending_state: dict | None = None
        self._reported_skips = 0
        self._stop_votes = False
        self.data_errors = 0

    @property
    def rank(self) -> int:
        """This process's rank among the processes training together (0 if alone)."""
        return distributed.rank()

    def create_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """The configured optimizer for ``model``'s parameters (move the model first)."""
        return build_optimizer(self.config.optimizer, model.parameters(), self.learning_rate)

    def add_callback(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    @abstractmethod
    def can_train(self, datasets: Sequence) -> bool:
        """Whether this trainer can train on ``datasets``."""

    @abstractmethod
    def build_batch_provider(self, datasets: Sequence, model, task, snapshot_container=None):
        """Prepare the batch provider for ``datasets``; checks the data before training.

        ``model`` is the network (built by ``voltrain.models.build_model``, whose
        ``network_config`` gives its shapes), ``task`` the ``TaskConfig``."""

    def build_validation_provider(self, datasets: Sequence, model, task, device) -> None:
        """Prepare validation on ``datasets`` (trainers with ``can_validate``)."""
        raise NotImplementedError(f"{type(self).__name__} does not validate")

    def raw_input(self) -> InputConfig:
        """What the network sees of raw: ``input`` completed by the trainer config's older
        keys (``TrainerConfig.legacy_input``)."""
        return merge_input(self.input, self.config.legacy_input())

    @abstractmethod
    def _draw_batch(self, device: torch.device) -> TrainingBatch:
        """The batch of iteration ``self.iteration + 1``, on ``device``."""

    def snapshot_arrays(self, batch: TrainingBatch, result: StepResult) -> dict | None:
        """The first sample's arrays by name (``voltrain.run.snapshot.SnapshotArray``) for a
        snapshot of this step, or None for a trainer that does not snapshot."""
        return None

    def check_first_sample(self, start_iteration: int) -> None:  # noqa: B027
        """Draw the run's first sample to check data and sampling before anything is
        written (trainers whose samples can fail)."""

    def __enter__(self) -> Trainer:
        if self.until is None:
            self.until = self.config.target_iteration(self.iteration)
        for callback in self.callbacks:
            callback.on_train_begin(self)
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        for callback in self.callbacks:
            callback.on_train_end(self)

    def iterate(
        self,
        num_iterations: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
    ) -> Iterator[TrainingIterationStats]:
        """Run ``num_iterations`` steps from ``self.iteration``, yielding stats after each.

        Ends early when a callback asks to stop (``stop_requested``). Raises
        ``NanLossError`` at a logging interval after a non-finite step if
        ``fail_on_nan_loss``.
        """
        device = torch.device(device)
        engine = self.step_engine(model, optimizer, device)
        schedule = self._schedule()
        for _ in range(num_iterations):
            if self.stop_requested:
                return
            start = time.perf_counter()
            batch = self._draw_batch(device)
            data_time = time.perf_counter() - start
            learning_rate = apply_learning_rate(optimizer, schedule.factor(self.iteration))
            snapshot_due = any(c.wants_snapshot(self.iteration + 1) for c in self.callbacks)
            result = self._step(engine, batch, snapshot_due)
            self.iteration += 1
            stats = TrainingIterationStats(
                iteration=self.iteration,
                time=time.perf_counter() - start,
                data_time=data_time,
                learning_rate=learning_rate,
                loss_tensor=result.loss,
                grad_norm_tensor=result.grad_norm,
                finite_tensor=result.finite,
                skipped_steps_tensor=engine.skipped_steps.clone(),
                amp_skipped_steps_tensor=engine.amp_skipped_steps.clone(),
                batch_size=self.batch_size,
                snapshot=self.snapshot_arrays(batch, result) if snapshot_due else None,
                data_errors=self.data_errors,
                figures_tensors=result.figures,
            )
            stats.validation = self._validate_if_due(model, engine)
            stats.log_due = self.iteration % self.config.log_every == 0 or (
                self.iteration == self.until
            )
            if stats.log_due:
                self.check_finite()
            stops = [callback.on_step_end(stats) for callback in self.callbacks]
            self.stop_requested = self.stop_requested or self._agree_to_stop(any(stops), stats)
            yield stats

    def _step(self, engine: StepEngine, batch: TrainingBatch, snapshot_due: bool) -> StepResult:
        """One optimisation step on ``batch`` (a trainer with more than the task's loss
        overrides this)."""
        return engine.step(
            self.task, batch.raw, batch.target, batch.weight, self.iteration, snapshot_due
        )

    def _agree_to_stop(self, wants_to_stop: bool, stats: TrainingIterationStats) -> bool:
        """Alone: ``wants_to_stop``. With several ranks: whether any rank asked to stop since
        the last agreement, decided together at logging and validating iterations (these
        read from the device anyway), so all ranks stop after the same iteration."""
        if not distributed.is_distributed():
            return wants_to_stop
        self._stop_votes = self._stop_votes or wants_to_stop
        if not (stats.log_due or stats.validation is not None):
            return False
        agreed = distributed.any_rank(self._stop_votes)
        self._stop_votes = False
        return agreed

    def step_engine(self, model, optimizer, device: torch.device) -> StepEngine:
        """The step engine of (model, optimizer, device), made once and kept."""
        engine = self._engine
        if engine is None or (engine.model, engine.optimizer, engine.device) != (
            model,
            optimizer,
            device,
        ):
            state = engine.state_dict() if engine is not None else self._pending_state
            engine = StepEngine(self.config, model, optimizer, device)
            if state is not None:
                engine.load_state_dict(state)
            self._engine, self._pending_state = engine, None
        return engine

    def _schedule(self):
        if self.lr_schedule is None:
            horizon = self.until or self.config.target_iteration(self.iteration)
            self.lr_schedule = self.config.lr_schedule.build(horizon)
        return self.lr_schedule

    def _validate_if_due(self, model, engine: StepEngine) -> dict[str, float] | None:
        interval = self.config.validation_interval
        if self.validator is None or interval == 0 or self.iteration % interval:
            return None
        results = None
        if distributed.is_main():
            results = self.validator.evaluate(model, engine.autocast)
        return distributed.broadcast_object(results)

    def check_finite(self) -> int:
        """Read the skip counters (a host sync); raise ``NanLossError`` after a non-finite
        step if ``fail_on_nan_loss``. Returns the number of steps skipped so far."""
        if self._engine is None:
            return 0
        skipped = int(self._engine.skipped_steps)
        if skipped > self._reported_skips:
            first = int(self._engine.first_bad_iteration)
            if self.fail_on_nan_loss:
                raise NanLossError(
                    f"the loss or a gradient was not finite at iteration {first}; that step "
                    "was not applied and training stopped (trainer.fail_on_nan_loss: true); "
                    "checkpoints written so far are kept"
                )
            logger.warning(
                "skipped %d non-finite step(s) so far, the first at iteration %d",
                skipped,
                first,
            )
            self._reported_skips = skipped
        return skipped

    def notify_snapshot(self, iteration: int, path: Path, arrays: dict[str, np.ndarray]) -> None:
        for callback in self.callbacks:
            callback.on_snapshot(iteration, path, arrays)

    def notify_checkpoint(self, iteration: int, path: Path) -> None:
        for callback in self.callbacks:
            callback.on_checkpoint(iteration, path)

    def state_dict(self) -> dict:
        """What a checkpoint needs besides model and optimizer to resume exactly."""
        engine = self._engine.state_dict() if self._engine is not None else self._pending_state
        return {
            "iteration": self.iteration,
            "step": engine,
            "lr_schedule": self._schedule().state_dict(),
            "reported_skips": self._reported_skips,
            "data_errors": self.data_errors,
            "callbacks": {
                c.state_key: c.state_dict() for c in self.callbacks if c.state_key is not None
            },
        }

    def load_state_dict(self, state: dict) -> None:
        self.iteration = int(state["iteration"])
        if state.get("step") is None:
            # Saved before any step: the next step starts from a fresh engine.
            self._engine, self._pending_state = None, None
        elif self._engine is not None:
            self._engine.load_state_dict(state["step"])
        else:
            self._pending_state = state["step"]
        self._reported_skips = state.get("reported_skips", 0)
        self.data_errors = state.get("data_errors", 0)
        saved = state.get("callbacks", {})
        for callback in self.callbacks:
            if callback.state_key in saved:
                callback.load_state_dict(saved[callback.state_key])
        horizon = (state.get("lr_schedule") or {}).get("horizon")
        current = self._schedule().horizon
        decaying = self.config.lr_schedule.needs_horizon
        if decaying and horizon is not None and current is not None and horizon != current:
            logger.warning(
                "the learning-rate schedule now ends at iteration %d, not %d as when the "
                "checkpoint was written; set trainer.lr_schedule.total_iterations to fix it",
                current,
                horizon,
            )
