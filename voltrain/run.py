"""A training run in a run directory: what ``voltrain train`` does.

Run directory::

    config.yaml          the resolved config (absolute data paths)
    metrics.jsonl        one JSON row per logged iteration
    checkpoints/         iteration_XXXXXXXX.pt: model, optimizer, iteration, RNG state
    snapshots.zarr/      <iteration>/<array>: raw, gt, mask, target, weight, prediction,
                         gradient of the first sample

Everything that can fail on user input (config, data, min_masked) is checked before the run
directory is created or touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from voltrain.errors import ConfigError
from voltrain.experiment import ExperimentConfig
from voltrain.models.unet import build_model
from voltrain.trainers.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """Where a run left its outputs and how it ended."""

    out_dir: Path
    iteration: int
    last_loss: float | None
    checkpoint: Path | None
    snapshots: Path


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available")
    return torch.device(name)


def config_hash(config: ExperimentConfig) -> str:
    return hashlib.sha256(config.to_yaml().encode()).hexdigest()[:16]


class TrainingRun:
    """Builds model, task and trainer from a config and trains them in ``out_dir``."""

    def __init__(self, config: ExperimentConfig, out_dir: Path, device: str = "auto"):
        self.config = config
        self.out_dir = Path(out_dir)
        self.device = resolve_device(device)
        torch.manual_seed(config.trainer.seed)
        self.task = config.task.build()
        self.model = build_model(config.model, 1, self.task.num_channels).to(self.device)
        self.trainer = config.trainer.build()
        self.optimizer = self.trainer.create_optimizer(self.model)

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def snapshot_container(self) -> Path:
        return self.out_dir / "snapshots.zarr"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    def prepare(self, resume: bool) -> None:
        """Check the data, then create the run directory or restore the latest checkpoint."""
        existing = latest_checkpoint(self.checkpoint_dir)
        if existing is not None and not resume:
            raise ConfigError(
                f"--out {self.out_dir}: already holds checkpoints; pass --resume to continue "
                "that run or choose another directory"
            )
        self.trainer.build_batch_provider(
            self.config.data.train, self.model, self.config.task, self.snapshot_container
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "config.yaml").write_text(self.config.to_yaml())
        if resume and existing is not None:
            self.restore(existing)
        else:
            self.metrics_path.unlink(missing_ok=True)

    def restore(self, path: Path) -> None:
        state = load_checkpoint(path)
        load_model_state(self.model, state, path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.trainer.iteration = int(state["iteration"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        self._truncate_metrics(self.trainer.iteration)
        logger.info("resumed from %s at iteration %d", path, self.trainer.iteration)

    def _truncate_metrics(self, iteration: int) -> None:
        if not self.metrics_path.exists():
            return
        rows = [
            line
            for line in self.metrics_path.read_text().splitlines()
            if line.strip() and json.loads(line)["iteration"] <= iteration
        ]
        self.metrics_path.write_text("".join(row + "\n" for row in rows))

    def save_checkpoint(self) -> Path:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.trainer.iteration,
            "torch_rng": torch.get_rng_state(),
            "config_hash": config_hash(self.config),
        }
        return save_checkpoint(self.checkpoint_dir, self.trainer.iteration, state)

    def train(self, until: int, progress: bool = True) -> RunResult:
        """Train until iteration ``until``, logging, snapshotting and checkpointing."""
        trainer = self.trainer
        config = self.config.trainer
        last_loss = None
        checkpoint = latest_checkpoint(self.checkpoint_dir)
        remaining = max(0, until - trainer.iteration)
        bar = tqdm(
            total=until,
            initial=trainer.iteration,
            disable=not progress,
            unit="it",
            dynamic_ncols=True,
        )
        with trainer, self.metrics_path.open("a") as metrics:
            for stats in trainer.iterate(remaining, self.model, self.optimizer, self.device):
                bar.update(1)
                if stats.iteration % config.log_every == 0 or stats.iteration == until:
                    row = stats.as_dict()
                    row["samples_per_second"] = trainer.batch_size / max(stats.time, 1e-9)
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                    last_loss = row["loss"]
                    bar.set_postfix(loss=f"{last_loss:.4f}", data=f"{stats.data_time:.2f}s")
                interval = config.checkpoint_interval
                if interval and stats.iteration % interval == 0:
                    checkpoint = self.save_checkpoint()
        bar.close()
        if remaining and (checkpoint is None or not checkpoint.name.endswith(f"{until:08d}.pt")):
            checkpoint = self.save_checkpoint()
        return RunResult(
            out_dir=self.out_dir,
            iteration=trainer.iteration,
            last_loss=last_loss,
            checkpoint=checkpoint,
            snapshots=self.snapshot_container,
        )


def train(
    config: ExperimentConfig,
    out_dir: str | Path,
    iterations: int | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
) -> RunResult:
    """Train ``config`` in ``out_dir`` up to ``iterations`` (default: trainer.iterations)."""
    run = TrainingRun(config, Path(out_dir), device)
    run.prepare(resume)
    until = iterations if iterations is not None else config.trainer.iterations
    return run.train(until, progress=progress)
