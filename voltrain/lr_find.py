"""The learning-rate finder: train a few iterations with the learning rate rising exponentially
and see where the loss falls fastest (``voltrain lr-find``).

The sweep runs the real training pipeline (the configured trainer, its loader, augments,
clipping and AMP) from the configured initial weights (``trainer.weights_from`` included) for
``iterations`` steps, learning rate ``min_lr * (max_lr / min_lr) ** (k / (iterations - 1))``
at step k. It stops early once the loss diverges. Model weights and optimizer state are put
back afterwards. How the sweep is read (divergence, suggestion, plot) is in
``voltrain.lr_suggest``: the steepest descent of the smoothed loss on log-log axes, capped
at a tenth of the rate where the loss diverged.
"""

from __future__ import annotations

import copy
import csv
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from voltrain.errors import ConfigError
from voltrain.experiment import ExperimentConfig
from voltrain.lr_suggest import SweepRecord, plot_sweep, smooth_centered, suggest
from voltrain.optim import ExponentialSweep
from voltrain.run import TrainingRun
from voltrain.run.checkpoint import load_matching_weights


@dataclass
class LRFindResult:
    """The sweep: learning rates, raw and smoothed losses, the suggestion and the files."""

    learning_rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    diverged_at: float | None
    plot: Path
    table: Path


def sweep(
    run: TrainingRun, iterations: int, min_lr: float, max_lr: float, progress: bool = False
) -> SweepRecord:
    """Train ``run`` for up to ``iterations`` steps with an exponentially rising learning
    rate; returns the learning rates and losses until the loss diverged, and where it did.

    The run's batch provider must be built. Weights, optimizer state and trainer state
    (iteration, schedule, clipping average, counters, callbacks) are put back afterwards, so
    the run continues as if the sweep had not happened.
    """
    trainer, model, optimizer = run.trainer, run.model, run.optimizer
    saved = copy.deepcopy((model.state_dict(), optimizer.state_dict(), trainer.state_dict()))
    settings = (trainer.callbacks, trainer.lr_schedule, trainer.until, trainer.fail_on_nan_loss)
    trainer.callbacks, trainer.fail_on_nan_loss = [], False
    trainer.until = trainer.iteration + iterations
    trainer.lr_schedule = ExponentialSweep(
        trainer.learning_rate, min_lr, max_lr, iterations, start=trainer.iteration
    )
    record = SweepRecord()
    try:
        with trainer, tqdm(total=iterations, disable=not progress, unit="it") as bar:
            for stats in trainer.iterate(iterations, model, optimizer, run.device):
                bar.update(1)
                if not record.add(stats.learning_rate, stats.loss):
                    break
    finally:
        trainer.callbacks, trainer.lr_schedule, trainer.until, trainer.fail_on_nan_loss = settings
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        trainer.load_state_dict(saved[2])
    return record


def find_learning_rate(
    config: ExperimentConfig,
    out_dir: str | Path,
    iterations: int = 100,
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    device: str = "auto",
    progress: bool = True,
) -> LRFindResult:
    """Sweep the learning rate over ``iterations`` steps of the real pipeline from the
    configured initial weights; write ``lr_find.png`` and ``lr_find.csv`` into ``out_dir``."""
    if not 0 < min_lr < max_lr:
        raise ConfigError(f"--min-lr ({min_lr:g}) must be positive and below --max-lr ({max_lr:g})")
    if iterations < 5:
        raise ConfigError(f"--iterations must be at least 5 for a sweep, got {iterations}")
    run = TrainingRun(config, Path(out_dir), device)
    run.trainer.build_batch_provider(config.data.train, run.model, config.task, None)
    if config.trainer.weights_from:
        load_matching_weights(run.model, config.trainer.weights_from)
    record = sweep(run, iterations, min_lr, max_lr, progress)
    if len(record.losses) < 2:
        raise ConfigError(
            f"lr-find: the loss diverged at once (learning rate {min_lr:g}); lower --min-lr"
        )
    learning_rates, losses = record.learning_rates, record.losses
    smoothed = smooth_centered(record.stable()[1]).tolist()
    smoothed += [float("nan")] * (len(losses) - len(smoothed))  # the step that diverged
    suggestion = suggest(record)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "lr_find.csv"
    with table.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["learning_rate", "loss", "smoothed_loss"])
        writer.writerows(zip(learning_rates, losses, smoothed, strict=True))
    plot = plot_sweep(out_dir / "lr_find.png", record, suggestion)
    return LRFindResult(
        learning_rates, losses, smoothed, suggestion, record.diverged_at, plot, table
    )


def describe(result: LRFindResult) -> str:
    """The lines ``voltrain lr-find`` prints."""
    return "\n".join(
        [
            f"swept {len(result.losses)} iterations, learning rate "
            f"{result.learning_rates[0]:.2e} to {result.learning_rates[-1]:.2e}",
            f"suggested learning rate: {result.suggestion:.2e} ({_why(result)})",
            f"plot:  {result.plot}",
            f"table: {result.table}",
        ]
    )


def _why(result: LRFindResult) -> str:
    """How the suggestion was reached, for the printed line."""
    if result.diverged_at is None:
        return (
            "steepest descent of the smoothed loss; the loss did not diverge up to "
            f"{result.learning_rates[-1]:.2e}, a larger --max-lr shows where it does"
        )
    return (
        "steepest descent of the smoothed loss, at most a tenth of "
        f"{result.diverged_at:.2e} where the loss diverged"
    )
