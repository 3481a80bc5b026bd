"""A training run in a run directory: what ``voltrain train`` does.

Run directory::

    config.yaml          the resolved config (absolute data paths)
    metrics.jsonl        one JSON row per logged iteration (and per validation)
    tensorboard/         TensorBoard event files: the same scalars, snapshot slices
    checkpoints/         iteration_XXXXXXXX.pt: everything needed to resume exactly;
                         best.pt: the checkpoint of the lowest validation loss
    snapshots.zarr/      <iteration>/<array>: raw, gt, mask, target, weight, prediction,
                         gradient of the first sample
    weights_from.json    which tensors trainer.weights_from supplied (if set)

Everything that can fail on user input (config, data, min_masked, a checkpoint that does
not fit) is checked before the run directory is created or touched.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from voltrain.callbacks import BestCheckpoint, Callback, PeriodicCheckpoint
from voltrain.errors import ConfigError
from voltrain.experiment import ExperimentConfig
from voltrain.models.unet import build_model
from voltrain.tensorboard import MetricsLogger, truncate_metrics
from voltrain.trainers.checkpoint import (
    BEST_NAME,
    atomic_save,
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_matching_weights,
    load_model_state,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

# Config keys that may differ between a checkpoint and the run resuming it: they change
# how long, how verbosely or how fast a run trains, not what it computes.
RESUMABLE_CHANGES = (
    "data.validate",
    "trainer.name",
    "trainer.steps",
    "trainer.max_steps",
    "trainer.log_every",
    "trainer.snapshot_interval",
    "trainer.checkpoint_interval",
    "trainer.checkpoint_seconds",
    "trainer.keep_checkpoint_max",
    "trainer.num_data_fetchers",
    "trainer.data_timeout",
    "trainer.fail_on_nan_loss",
    "trainer.weights_from",
    "trainer.validation_interval",
    "trainer.validation_samples",
    "trainer.early_stopping",
    "trainer.time_limit",
)


@dataclass
class RunResult:
    """Where a run left its outputs and how it ended."""

    out_dir: Path
    iteration: int
    last_loss: float | None
    checkpoint: Path | None
    snapshots: Path
    best_checkpoint: Path | None = None
    stopped_early: bool = False


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available")
    return torch.device(name)


def config_hash(config: ExperimentConfig) -> str:
    return hashlib.sha256(config.to_yaml().encode()).hexdigest()[:16]


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config mappings."""
    changed = []
    for key in sorted(set(old) | set(new), key=str):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += changed_keys(a, b, path + ".")
        elif a != b:
            changed.append(path)
    return changed


class TrainingRun:
    """Builds model, task and trainer from a config and trains them in ``out_dir``.

    Args:
        config: the experiment.
        out_dir: the run directory.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        callbacks: extra callbacks (``voltrain.callbacks.Callback``), called after the
            built-in early stopping and timer and before logging and checkpointing.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        out_dir: Path,
        device: str = "auto",
        callbacks: Sequence[Callback] = (),
    ):
        self.config = config
        self.out_dir = Path(out_dir)
        self.device = resolve_device(device)
        torch.manual_seed(config.trainer.seed)
        self.task = config.task.build()
        self.model = build_model(config.model, 1, self.task.num_channels).to(self.device)
        self.trainer = config.trainer.build()
        for callback in callbacks:
            self.trainer.add_callback(callback)
        self.optimizer = self.trainer.create_optimizer(self.model)
        self.until: int | None = None
        self.metrics_logger = MetricsLogger(self.out_dir)

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def best_checkpoint_path(self) -> Path:
        return self.checkpoint_dir / BEST_NAME

    @property
    def snapshot_container(self) -> Path:
        return self.out_dir / "snapshots.zarr"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    def prepare(self, resume: bool, until: int | None = None) -> None:
        """Check config, data and checkpoint, then create the run directory or restore the
        latest checkpoint. ``until`` overrides the iteration to train up to."""
        existing = latest_checkpoint(self.checkpoint_dir)
        if existing is not None and not resume:
            raise ConfigError(
                f"--out {self.out_dir}: already holds checkpoints; pass --resume to continue "
                "that run or choose another directory"
            )
        state = load_checkpoint(existing) if existing is not None else None
        if state is not None:
            self._check_resumable(state, existing)
        self.trainer.build_batch_provider(
            self.config.data.train, self.model, self.config.task, self.snapshot_container
        )
        self._prepare_validation()
        start = int(state["iteration"]) if state is not None else 0
        self.set_until(until if until is not None else self._target(start))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "config.yaml").write_text(self.config.to_yaml())
        if state is not None:
            self.restore(existing, state)
        else:
            self.metrics_path.unlink(missing_ok=True)
            if self.config.trainer.weights_from:
                self._load_initial_weights(self.config.trainer.weights_from)
        self._attach_run_callbacks()

    def _target(self, start: int) -> int:
        return self.config.trainer.target_iteration(start)

    def set_until(self, until: int) -> None:
        """Train up to ``until``; it is also the learning-rate schedule's horizon."""
        ok, message = self.config.trainer.check_schedule(until)
        if not ok:
            raise ConfigError(message)
        self.until = until
        self.trainer.until = until
        self.trainer.lr_schedule = None

    def _check_resumable(self, state: dict, path: Path) -> None:
        saved = state.get("config")
        if saved is None:
            return
        current = self.config.model_dump(mode="json", by_alias=True)
        changed = [
            key
            for key in changed_keys(saved, current)
            if not any(key == k or key.startswith(k + ".") for k in RESUMABLE_CHANGES)
        ]
        if changed:
            raise ConfigError(
                f"--resume: the config differs from checkpoint '{path}' at "
                f"{', '.join(changed)}; resuming would not continue the same training. "
                f"Restore those keys, or start a new run with trainer.weights_from: {path}"
            )

    def _prepare_validation(self) -> None:
        datasets = self.config.data.validate_
        trainer_config = self.config.trainer
        validating = bool(datasets) and trainer_config.validation_interval > 0
        if trainer_config.early_stopping is not None and not validating:
            raise ConfigError("trainer.early_stopping needs datasets in data.validate")
        if not validating:
            return
        if not hasattr(self.trainer, "build_validation_provider"):
            logger.warning("trainer type '%s' does not validate", trainer_config.type)
            return
        self.trainer.build_validation_provider(datasets, self.model, self.config.task, self.device)

    def _load_initial_weights(self, source: str) -> None:
        report = load_matching_weights(self.model, source)
        report.write(self.out_dir / "weights_from.json")
        incomplete = report.missing or report.mismatched
        (logger.warning if incomplete else logger.info)("%s", report.summary())

    def _attach_run_callbacks(self) -> None:
        config = self.config.trainer
        self.trainer.add_callback(self.metrics_logger)
        if self.trainer.validator is not None:
            self.trainer.add_callback(BestCheckpoint(self.save_best_checkpoint))
        self.trainer.add_callback(
            PeriodicCheckpoint(
                self.save_checkpoint, config.checkpoint_interval, config.checkpoint_seconds
            )
        )

    def restore(self, path: Path, state: dict | None = None) -> None:
        """Restore model, optimizer, trainer state (schedule, scaler, clipping average,
        counters, callbacks) and every RNG from a checkpoint."""
        state = state if state is not None else load_checkpoint(path)
        load_model_state(self.model, state, path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.trainer.load_state_dict(state.get("trainer") or {"iteration": state["iteration"]})
        if "rng" in state:
            restore_rng_state(state["rng"])
        elif "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        truncate_metrics(self.metrics_path, self.trainer.iteration)
        logger.info("resumed from %s at iteration %d", path, self.trainer.iteration)

    def checkpoint_state(self) -> dict:
        """Everything needed to resume exactly."""
        return {
            "format": 2,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.trainer.iteration,
            "trainer": self.trainer.state_dict(),
            "rng": capture_rng_state(),
            "config": self.config.model_dump(mode="json", by_alias=True),
            "config_hash": config_hash(self.config),
        }

    def save_checkpoint(self) -> Path:
        """Write the checkpoint of the current iteration and prune old ones.

        A non-finite step not yet reported raises ``NanLossError`` first (when the config
        fails on them), so a checkpoint never follows an unreported non-finite step.
        """
        self.trainer.check_finite()
        path = save_checkpoint(self.checkpoint_dir, self.trainer.iteration, self.checkpoint_state())
        prune_checkpoints(self.checkpoint_dir, self.config.trainer.keep_checkpoint_max)
        self.trainer.notify_checkpoint(self.trainer.iteration, path)
        return path

    def save_best_checkpoint(self, validation_loss: float) -> Path:
        self.trainer.check_finite()
        state = self.checkpoint_state() | {"validation_loss": validation_loss}
        path = atomic_save(self.best_checkpoint_path, state)
        self.trainer.notify_checkpoint(self.trainer.iteration, path)
        return path

    def train(self, until: int | None = None, progress: bool = True) -> RunResult:
        """Train until iteration ``until`` (default: as prepared), logging, validating,
        snapshotting and checkpointing; stops early when a callback asks."""
        if until is not None and until != self.until:
            self.set_until(until)
        until = self.until if self.until is not None else self._target(self.trainer.iteration)
        trainer = self.trainer
        start = trainer.iteration
        bar = tqdm(total=until, initial=start, disable=not progress, unit="it", dynamic_ncols=True)
        with trainer:
            for stats in trainer.iterate(
                max(0, until - start), self.model, self.optimizer, self.device
            ):
                bar.update(1)
                if stats.log_due and self.metrics_logger.last_row:
                    loss = self.metrics_logger.last_row["loss"]
                    bar.set_postfix(loss=f"{loss:.4f}", data=f"{stats.data_time:.2f}s")
        bar.close()
        checkpoints = list_checkpoints(self.checkpoint_dir)
        checkpoint = checkpoints[-1][1] if checkpoints else None
        if trainer.iteration > start and (
            not checkpoints or checkpoints[-1][0] != trainer.iteration
        ):
            checkpoint = self.save_checkpoint()
        last = self.metrics_logger.last_row
        best = self.best_checkpoint_path
        return RunResult(
            out_dir=self.out_dir,
            iteration=trainer.iteration,
            last_loss=last["loss"] if last else None,
            checkpoint=checkpoint,
            snapshots=self.snapshot_container,
            best_checkpoint=best if best.exists() else None,
            stopped_early=trainer.stop_requested,
        )


def train(
    config: ExperimentConfig,
    out_dir: str | Path,
    iterations: int | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train ``config`` in ``out_dir`` up to iteration ``iterations`` (default: from
    ``trainer.steps`` or ``trainer.max_steps``)."""
    run = TrainingRun(config, Path(out_dir), device, callbacks)
    run.prepare(resume, until=iterations)
    return run.train(progress=progress)
