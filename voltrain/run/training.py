"""A training run in a run directory: what ``voltrain train`` does.

Run directory::

    config.yaml          the resolved config (absolute data paths)
    metrics.jsonl        one JSON row per logged iteration (and per validation)
    tensorboard/         TensorBoard event files: the same scalars, snapshot slices
    checkpoints/         iteration_XXXXXXXX.pt: everything needed to resume exactly;
                         best.pt: the checkpoint of the best validation metric
    snapshots.zarr/      <iteration>/<array>: raw, gt, mask, target, weight, prediction,
                         gradient of the first sample (OME-NGFF images, data in <array>/s0)
    snapshots/           <iteration>.png: central slices of raw, gt, target, prediction
    loss.png             the loss curve from metrics.jsonl (at snapshots and at the end)
    weights_from.json    which tensors trainer.weights_from supplied (if set)

Everything that can fail on user input (config, data, min_masked, a checkpoint that does
not fit) is checked before the run directory is created or touched.

Under torchrun (``voltrain.distributed``) every rank builds the same run, loads the same
checkpoint and trains on its own batches; only rank 0 writes into the run directory.
Checkpoints are collective: the ranks first compare their parameter checksums (written into
the checkpoint as ``parameter_checksums``) and stop with ``ReplicaDivergenceError`` if they
differ.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from voltrain import distributed
from voltrain.callbacks import Callback
from voltrain.errors import ConfigError
from voltrain.experiment import ExperimentConfig
from voltrain.faults.lock import DirectoryLock
from voltrain.faults.os_errors import check_output_directory, reporting_os_errors
from voltrain.inference import resolve_device
from voltrain.models import build_model
from voltrain.pictures import RunPictures
from voltrain.run.checkpoint import (
    BEST_NAME,
    atomic_save,
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    load_matching_weights,
    load_model_state,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from voltrain.run.checkpoint_callbacks import BestValidation, CheckpointSchedule
from voltrain.run.fallback import newest_readable_checkpoint
from voltrain.run.result import RunResult
from voltrain.run.resume import check_resumable
from voltrain.run.termination import StopOnSignal, TerminatedError
from voltrain.tensorboard import MetricsLogger, truncate_metrics

logger = logging.getLogger(__name__)

LOCK_NAME = ".voltrain.lock"


def config_hash(config: ExperimentConfig) -> str:
    return hashlib.sha256(config.to_yaml().encode()).hexdigest()[:16]


class TrainingRun:
    """Builds model, task and trainer from a config and trains them in ``out_dir``.

    Under torchrun, constructing it joins the process group (see
    ``voltrain.distributed.init_from_environment``); on CUDA each rank then uses
    ``cuda:LOCAL_RANK``.

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
        self.device = distributed.init_from_environment(
            resolve_device(device), config.trainer.peer_timeout
        )
        self.is_main = distributed.is_main()
        torch.manual_seed(config.trainer.seed)
        self.task = config.task.build()
        in_channels = config.trainer.input_channels(config.data.train)
        self.in_channels = in_channels
        self.model = build_model(
            config.model, in_channels, self.task.num_channels, config.trainer.input_shape
        )
        self.model.to(self.device)
        self.trainer = config.trainer.build()
        self.trainer.input = config.input
        self.trainer.segment = config.segment
        self.trainer.unlabeled = config.data.unlabeled
        for callback in callbacks:
            self.trainer.add_callback(callback)
        self.optimizer = self.trainer.create_optimizer(self.model)
        self.until: int | None = None
        self.metrics_logger = MetricsLogger(self.out_dir)
        self.checkpointed_iteration: int | None = None
        # Rank 0 holds it from the first look into the run directory until the run ends.
        self.lock = DirectoryLock(self.out_dir / LOCK_NAME, f"--out {self.out_dir}")

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
        if self.is_main:
            check_output_directory(self.out_dir, "--out")
        if self.is_main and self.out_dir.is_dir():
            self.lock.acquire()
        elif self.is_main and resume:
            logger.warning("--resume: %s does not exist; starting a new run", self.out_dir)
        # Rank 0 picks the checkpoint, so every rank restores the same one.
        existing = distributed.broadcast_object(
            latest_checkpoint(self.checkpoint_dir) if self.is_main else None
        )
        if existing is not None and not resume:
            raise ConfigError(
                f"--out {self.out_dir}: already holds checkpoints; pass --resume to continue "
                "that run or choose another directory"
            )
        state = None
        if existing is not None:
            # A corrupt newest checkpoint is passed over for the newest readable one.
            if self.is_main:
                existing, state = newest_readable_checkpoint(self.checkpoint_dir)
            existing = distributed.broadcast_object(existing)
            state = state if state is not None else load_checkpoint(existing)
        if state is not None:
            self._check_resumable(state, existing)
        self.trainer.build_batch_provider(
            self.config.data.train, self.model, self.config.task, self.snapshot_container
        )
        self._prepare_validation()
        start = int(state["iteration"]) if state is not None else 0
        self.set_until(until if until is not None else self._target(start))
        self.trainer.check_first_sample(start)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
            (self.out_dir / "config.yaml").write_text(self.config.to_yaml())
        if state is not None:
            self.restore(existing, state)
        else:
            if self.is_main:
                self.metrics_path.unlink(missing_ok=True)
            if self.config.trainer.weights_from:
                self._load_initial_weights(self.config.trainer.weights_from)
        self._attach_run_callbacks()
        distributed.barrier()

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
        current = self.config.model_dump(mode="json", by_alias=True)
        check_resumable(state, path, current, distributed.world_size())

    def _prepare_validation(self) -> None:
        datasets = self.config.data.validate_
        trainer_config = self.config.trainer
        validating = bool(datasets) and trainer_config.validation_interval > 0
        if trainer_config.early_stopping is not None and not validating:
            raise ConfigError("trainer.early_stopping needs datasets in data.validate")
        if not validating:
            return
        if not self.trainer.can_validate:
            logger.warning("trainer type '%s' does not validate", trainer_config.type)
            return
        self._check_validation_metric()
        self.trainer.build_validation_provider(datasets, self.model, self.config.task, self.device)

    def _check_validation_metric(self) -> None:
        validation = self.config.trainer.validation
        # The task's metric names: ask it for its metrics of one voxel.
        one = torch.zeros(1, self.task.num_channels, 1, 1, 1)
        names = ["loss", *self.task.metric(one, one, torch.ones_like(one))]
        if validation.mode == "blockwise" and self.config.task.affinity_channels():
            names += ["voi", "voi_split", "voi_merge", "arand"]
        if validation.metric_key.removeprefix("validation_") not in names:
            raise ConfigError(
                f"trainer.validation.metric: '{validation.metric}' is not a validation result "
                f"of task '{self.config.task.type}'; choose one of {', '.join(names)}"
            )

    def _load_initial_weights(self, source: str) -> None:
        report = load_matching_weights(self.model, source)
        if self.is_main:
            report.write(self.out_dir / "weights_from.json")
        incomplete = report.missing or report.mismatched
        (logger.warning if incomplete else logger.info)("%s", report.summary())

    def _attach_run_callbacks(self) -> None:
        config = self.config.trainer
        if self.is_main:
            self.trainer.add_callback(self.metrics_logger)
            self.trainer.add_callback(RunPictures(self.out_dir, self.task.value_range))
        if self.trainer.validator is not None:
            key, mode = config.validation.metric_key, self.task.best_mode(config.validation)
            self.trainer.add_callback(BestValidation(self.save_best_checkpoint, key, mode))
        self.trainer.add_callback(
            CheckpointSchedule(
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
        self.checkpointed_iteration = self.trainer.iteration
        if self.is_main:
            truncate_metrics(self.metrics_path, self.trainer.iteration)
        logger.info("resumed from %s at iteration %d", path, self.trainer.iteration)

    def checkpoint_state(self) -> dict:
        """Everything needed to resume exactly, and the training data's voxel size (for
        ``voltrain predict`` once the data is gone)."""
        voxel_size = self.trainer.voxel_size
        return {
            "format": 2,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.trainer.iteration,
            "trainer": self.trainer.state_dict(),
            "rng": capture_rng_state(),
            "config": self.config.model_dump(mode="json", by_alias=True),
            "config_hash": config_hash(self.config),
            "world_size": distributed.world_size(),
            "voxel_size": None if voxel_size is None else [int(v) for v in voxel_size],
            "input_channels": self.in_channels,
        }

    def _verified_state(self) -> dict:
        """The checkpoint state, after checking that no non-finite step went unreported
        (``NanLossError`` when the config fails on them) and that every rank holds the
        same weights (``ReplicaDivergenceError``). Collective under torchrun."""
        self.trainer.check_finite()
        checksums = distributed.verify_replicas(self.model, self.trainer.iteration)
        if not self.is_main:
            return {}
        return self.checkpoint_state() | {"parameter_checksums": checksums}

    def save_checkpoint(self) -> Path:
        """Write the checkpoint of the current iteration and prune old ones (rank 0; the
        other ranks take part in the checks and return the same path)."""
        iteration = self.trainer.iteration
        state = self._verified_state()
        path = checkpoint_path(self.checkpoint_dir, iteration)
        if self.is_main:
            save_checkpoint(self.checkpoint_dir, iteration, state)
            prune_checkpoints(self.checkpoint_dir, self.config.trainer.keep_checkpoint_max)
            self.trainer.notify_checkpoint(iteration, path)
        self.checkpointed_iteration = iteration
        return path

    def save_best_checkpoint(self, validation: dict[str, float]) -> Path:
        """Write ``best.pt`` with the validation results that made it the best."""
        state = self._verified_state()
        if self.is_main:
            metric = self.config.trainer.validation.metric_key
            state |= {
                "validation": dict(validation),
                "best_metric": metric,
                "validation_loss": validation.get("validation_loss"),
            }
            atomic_save(self.best_checkpoint_path, state)
            self.trainer.notify_checkpoint(self.trainer.iteration, self.best_checkpoint_path)
        return self.best_checkpoint_path

    def train(self, until: int | None = None, progress: bool = True) -> RunResult:
        """Train until iteration ``until`` (default: as prepared), logging, validating,
        snapshotting and checkpointing; stops early when a callback asks."""
        if until is not None and until != self.until:
            self.set_until(until)
        until = self.until if self.until is not None else self._target(self.trainer.iteration)
        trainer = self.trainer
        start = trainer.iteration
        bar = tqdm(
            total=until,
            initial=start,
            disable=not (progress and self.is_main),
            unit="it",
            dynamic_ncols=True,
        )
        with trainer:
            for stats in trainer.iterate(
                max(0, until - start), self.model, self.optimizer, self.device
            ):
                bar.update(1)
                if stats.log_due and self.metrics_logger.last_row:
                    loss = self.metrics_logger.last_row["loss"]
                    bar.set_postfix(loss=f"{loss:.4f}", data=f"{stats.data_time:.2f}s")
        bar.close()
        if trainer.iteration > start and self.checkpointed_iteration != trainer.iteration:
            self.save_checkpoint()
        checkpoint = None
        if self.checkpointed_iteration is not None:
            checkpoint = checkpoint_path(self.checkpoint_dir, self.checkpointed_iteration)
        last = self.metrics_logger.last_row
        best = self.best_checkpoint_path
        return RunResult(
            out_dir=self.out_dir,
            iteration=trainer.iteration,
            last_loss=last["loss"] if last else None,
            checkpoint=checkpoint,
            snapshots=self.snapshot_container,
            best_checkpoint=best if self.is_main and best.exists() else None,
            stopped_early=trainer.stop_requested,
            is_main=self.is_main,
            profile_table=_profile_table(trainer),
        )


def _profile_table(trainer) -> str | None:
    """The data pipeline's ms per stage, when ``--profile`` switched timing on."""
    profile = trainer.stage_profile
    return profile.table() if profile is not None and profile.samples else None


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
    ``trainer.steps`` or ``trainer.max_steps``). Under torchrun, every rank calls it; the
    process group is left at the end."""
    run = None
    stop = StopOnSignal()
    try:
        with stop, reporting_os_errors(Path(out_dir)):
            run = TrainingRun(config, Path(out_dir), device, [*callbacks, stop])
            run.prepare(resume, until=iterations)
            result = run.train(progress=progress)
    finally:
        if run is not None:
            run.lock.release()
        distributed.teardown()
    if stop.received:
        raise TerminatedError(
            f"stopped by SIGTERM at iteration {result.iteration}; checkpoint "
            f"{result.checkpoint} written, --resume continues from it"
        )
    return result
