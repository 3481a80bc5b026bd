"""The learning-rate finder: train a few iterations with the learning rate rising exponentially
and see where the loss falls fastest (``voltrain lr-find``).

The sweep runs the real training pipeline (the configured trainer, its loader, augments,
clipping and AMP) from the configured initial weights (``trainer.weights_from`` included) for
``iterations`` steps, learning rate ``min_lr * (max_lr / min_lr) ** (k / (iterations - 1))``
at step k. It stops early once the loss diverges (non-finite, or four times the best smoothed
loss). Model weights and optimizer state are put back afterwards.

The suggestion is the swept learning rate where the smoothed loss falls fastest against
log(lr) (the steepest descent), searched between a tenth of the way in and the minimum of the
smoothed loss. The loss is smoothed with a bias-corrected EMA, beta = min(0.98, 1 - 2 / K).
"""

from __future__ import annotations

import copy
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from voltrain.errors import ConfigError
from voltrain.experiment import ExperimentConfig
from voltrain.optim import ExponentialSweep
from voltrain.run import TrainingRun
from voltrain.run.checkpoint import load_matching_weights

DIVERGENCE_FACTOR = 4.0


@dataclass
class LRFindResult:
    """The sweep: learning rates, raw and smoothed losses, the suggestion and the files."""

    learning_rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    plot: Path
    table: Path


def smooth(losses: list[float]) -> list[float]:
    """Bias-corrected exponential moving average of ``losses``."""
    beta = min(0.98, 1 - 2 / max(len(losses), 3))
    average, smoothed = 0.0, []
    for k, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta**k))
    return smoothed


def suggest(learning_rates: list[float], smoothed: list[float]) -> float:
    """The learning rate of the steepest descent of ``smoothed`` against log(lr)."""
    if len(smoothed) < 3:
        return learning_rates[int(np.argmin(smoothed))]
    end = int(np.argmin(smoothed)) + 1
    begin = min(len(smoothed) // 10, max(end - 2, 0))
    if end - begin < 2:
        begin, end = 0, len(smoothed)
    slope = np.gradient(np.asarray(smoothed[begin:end]), np.log(learning_rates[begin:end]))
    return learning_rates[begin + int(np.argmin(slope))]


def sweep(
    run: TrainingRun, iterations: int, min_lr: float, max_lr: float, progress: bool = False
) -> tuple[list[float], list[float]]:
    """Train ``run`` for up to ``iterations`` steps with an exponentially rising learning
    rate; returns (learning rates, losses) until the loss diverges.

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
    learning_rates, losses = [], []
    try:
        with trainer, tqdm(total=iterations, disable=not progress, unit="it") as bar:
            for stats in trainer.iterate(iterations, model, optimizer, run.device):
                bar.update(1)
                loss = stats.loss
                if not math.isfinite(loss):
                    break
                learning_rates.append(stats.learning_rate)
                losses.append(loss)
                if loss > DIVERGENCE_FACTOR * min(smooth(losses)):
                    break
    finally:
        trainer.callbacks, trainer.lr_schedule, trainer.until, trainer.fail_on_nan_loss = settings
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        trainer.load_state_dict(saved[2])
    return learning_rates, losses


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
    learning_rates, losses = sweep(run, iterations, min_lr, max_lr, progress)
    if len(losses) < 2:
        raise ConfigError(
            f"lr-find: the loss diverged at once (learning rate {min_lr:g}); lower --min-lr"
        )
    smoothed = smooth(losses)
    suggestion = suggest(learning_rates, smoothed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "lr_find.csv"
    with table.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["learning_rate", "loss", "smoothed_loss"])
        writer.writerows(zip(learning_rates, losses, smoothed, strict=True))
    plot = _plot(out_dir / "lr_find.png", learning_rates, losses, smoothed, suggestion)
    return LRFindResult(learning_rates, losses, smoothed, suggestion, plot, table)


def _plot(path: Path, learning_rates, losses, smoothed, suggestion: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(learning_rates, losses, color="0.7", linewidth=1, label="loss")
    axes.plot(learning_rates, smoothed, color="C0", linewidth=2, label="smoothed loss")
    axes.axvline(suggestion, color="C3", linestyle="--", label=f"suggested {suggestion:.2e}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title("learning-rate sweep")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def describe(result: LRFindResult) -> str:
    """The lines ``voltrain lr-find`` prints."""
    return "\n".join(
        [
            f"swept {len(result.losses)} iterations, learning rate "
            f"{result.learning_rates[0]:.2e} to {result.learning_rates[-1]:.2e}",
            f"suggested learning rate: {result.suggestion:.2e} (steepest descent of the "
            "smoothed loss)",
            f"plot:  {result.plot}",
            f"table: {result.table}",
        ]
    )
