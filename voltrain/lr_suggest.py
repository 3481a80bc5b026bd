"""Reading a learning-rate sweep: when it diverged, which rate to suggest, and its plot.

Nothing here trains: ``SweepRecord`` collects (learning rate, loss) pairs from any loop
that raises the rate exponentially (``voltrain.lr_find.sweep`` runs the real pipeline), and
decides when to stop.

The suggestion is the rate where the loss falls fastest, judged on log-log axes (the slope
of log loss against log lr) after smoothing, and capped at a tenth of the rate where the
loss diverged. The steepest descent alone can sit right at the edge of divergence when the
loss falls until it explodes; a tenth of the divergence rate leaves the margin that
gradient descent needs (on a quadratic with curvature L it diverges above 2/L and
converges fastest at 1/L).

Two smoothings serve two purposes. Stopping must be decided during the sweep, so it uses a
causal, bias-corrected EMA. The suggestion is made afterwards, so it uses a centered moving
average of log loss, which does not lag: an EMA over a 100-step sweep lags by tens of steps
and moves the steepest point towards divergence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DIVERGENCE_FACTOR = 4.0
"""The sweep stops once a loss exceeds this many times the best smoothed loss."""
SAFETY_FACTOR = 10.0
"""The suggestion is at most the divergence rate divided by this."""


@dataclass
class SweepRecord:
    """The (learning rate, loss) pairs of a sweep, and the rate where it diverged."""

    learning_rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    diverged_at: float | None = None

    def add(self, learning_rate: float, loss: float) -> bool:
        """Record one step; False once the loss diverged (non-finite, or more than
        ``DIVERGENCE_FACTOR`` times the best EMA-smoothed loss): stop the sweep then."""
        if not math.isfinite(loss):
            self.diverged_at = learning_rate
            return False
        self.learning_rates.append(learning_rate)
        self.losses.append(loss)
        if loss > DIVERGENCE_FACTOR * min(smooth(self.losses)):
            self.diverged_at = learning_rate
            return False
        return True

    def stable(self) -> tuple[list[float], list[float]]:
        """The rates and losses before the step that diverged (which would otherwise leak
        into the smoothing of its neighbours)."""
        if self.diverged_at is not None and self.learning_rates[-1:] == [self.diverged_at]:
            return self.learning_rates[:-1], self.losses[:-1]
        return self.learning_rates, self.losses


def smooth(losses: list[float]) -> list[float]:
    """Bias-corrected exponential moving average of ``losses`` (causal)."""
    beta = min(0.98, 1 - 2 / max(len(losses), 3))
    average, smoothed = 0.0, []
    for k, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta**k))
    return smoothed


def smooth_centered(losses: list[float]) -> np.ndarray:
    """Centered moving average over about a tenth of the sweep (at least 3 steps), of log
    loss when every loss is positive (the plot's axes), else of the loss."""
    values = np.asarray(losses, dtype=float)
    positive = bool(np.all(values > 0))
    if positive:
        values = np.log(values)
    half = max(1, len(values) // 20)
    smoothed = np.array(
        [values[max(0, i - half) : i + half + 1].mean() for i in range(len(values))]
    )
    return np.exp(smoothed) if positive else smoothed


def steepest_descent(learning_rates: list[float], smoothed: np.ndarray) -> float:
    """The rate where ``smoothed`` falls fastest against log(lr), before its minimum and
    after the first tenth of the sweep (where the smoothing window is still short)."""
    if len(smoothed) < 3:
        return learning_rates[int(np.argmin(smoothed))]
    end = int(np.argmin(smoothed)) + 1
    begin = min(len(smoothed) // 10, max(end - 2, 0))
    if end - begin < 2:
        begin, end = 0, len(smoothed)
    values = smoothed[begin:end]
    values = np.log(values) if np.all(values > 0) else values
    slope = np.gradient(values, np.log(learning_rates[begin:end]))
    return learning_rates[begin + int(np.argmin(slope))]


def suggest(record: SweepRecord) -> float:
    """The suggested rate: the steepest descent, at most a tenth of the divergence rate."""
    rates, losses = record.stable()
    if not losses:
        return record.learning_rates[0]
    steepest = steepest_descent(rates, smooth_centered(losses))
    if record.diverged_at is None:
        return steepest
    return max(min(steepest, record.diverged_at / SAFETY_FACTOR), rates[0])


def plot_sweep(path: Path, record: SweepRecord, suggestion: float) -> Path:
    """Write the sweep on log-log axes with the suggestion marked. The y-axis is clipped
    to the curve before divergence, so that the jump at the end does not flatten it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    losses = np.asarray(record.losses)
    rates, stable = record.stable()
    smoothed = smooth_centered(stable)
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(record.learning_rates, losses, color="0.7", linewidth=1, label="loss")
    axes.plot(rates, smoothed, color="C0", linewidth=2, label="smoothed loss")
    at = int(np.argmin(np.abs(np.log(rates) - math.log(suggestion))))
    axes.axvline(suggestion, color="C3", linestyle="--", label=f"suggested {suggestion:.2e}")
    axes.plot([rates[at]], [smoothed[at]], "o", color="C3")
    if record.diverged_at is not None:
        axes.axvline(
            record.diverged_at,
            color="0.4",
            linestyle=":",
            label=f"diverged {record.diverged_at:.2e}",
        )
    axes.set_xscale("log")
    if np.all(losses > 0):
        axes.set_yscale("log")
        # from the lowest loss to the smoothed curve's start: the descent fills the plot
        low = losses.min() / 1.05
        high = max(smoothed[: int(np.argmin(smoothed)) + 1].max() * 1.1, low * 1.2)
        axes.set_ylim(low, high)
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title("learning-rate sweep")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
