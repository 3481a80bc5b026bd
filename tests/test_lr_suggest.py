"""Reading a learning-rate sweep: on a problem whose best rate is known, the suggestion is
safely below divergence and near the best rate; the plot is log-log with the suggestion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voltrain.lr_suggest import SweepRecord, plot_sweep, smooth_centered, suggest
from voltrain.optim import ExponentialSweep


def sweep_quadratic(curvature: float, seed: int, iterations: int = 100) -> SweepRecord:
    """SGD on 0.5 * sum(h_i x_i^2), h log-spaced up to ``curvature`` (L), with noisy
    gradients. Gradient descent on it converges fastest near 1/L and diverges above 2/L."""
    generator = torch.Generator().manual_seed(seed)
    hessian = torch.logspace(-2, 0, 20) * curvature
    x = torch.randn(20, generator=generator).requires_grad_(True)
    optimizer = torch.optim.SGD([x], lr=1.0)
    rates = ExponentialSweep(1.0, 1e-4 / curvature, 10 / curvature, iterations)
    record = SweepRecord()
    for step in range(iterations):
        learning_rate = rates.learning_rate(step)
        optimizer.param_groups[0]["lr"] = learning_rate
        optimizer.zero_grad()
        loss = 0.5 * (hessian * x * x).sum()
        noise = 0.1 * (torch.randn(20, generator=generator) * x).sum()
        (loss + noise).backward()
        optimizer.step()
        if not record.add(learning_rate, loss.item()):
            break
    return record


@pytest.mark.parametrize("curvature", [1.0, 10.0, 200.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_suggestion_on_a_quadratic_is_below_divergence_and_near_the_best_rate(curvature, seed):
    record = sweep_quadratic(curvature, seed)
    limit = 2 / curvature
    assert record.diverged_at is not None and record.diverged_at > limit
    suggestion = suggest(record)
    assert limit / 20 < suggestion < limit


def test_without_divergence_the_steepest_descent_is_suggested():
    rates = list(np.logspace(-6, 0, 40))
    # a sigmoid drop centered at 1e-3 that never comes back up
    losses = [1 / (1 + (r / 1e-3) ** 2) + 0.05 for r in rates]
    record = SweepRecord(rates, losses)
    assert record.diverged_at is None
    # on log-log axes: where log(loss) falls fastest against log(lr)
    slopes = np.gradient(np.log(losses), np.log(rates))
    expected = rates[int(np.argmin(slopes))]
    step = rates[1] / rates[0]
    assert expected / step**1.01 <= suggest(record) <= expected * step**1.01


def test_a_spike_stops_the_sweep_and_caps_the_suggestion():
    record = SweepRecord()
    rates = np.logspace(-5, -1, 30)
    for rate in rates[:25]:
        assert record.add(float(rate), 1.0 - 0.3 * np.log10(rate / 1e-5) / 4)
    assert not record.add(float(rates[25]), 767.0)
    assert record.diverged_at == rates[25]
    assert suggest(record) <= rates[25] / 10


def test_centered_smoothing_does_not_lag_a_step():
    losses = [1.0] * 50 + [0.01] * 50
    smoothed = smooth_centered(losses)
    assert smoothed[40] == pytest.approx(1.0) and smoothed[60] == pytest.approx(0.01)


def test_plot_is_written_with_the_suggestion(tmp_path):
    record = sweep_quadratic(1.0, seed=0)
    path = plot_sweep(tmp_path / "lr_find.png", record, suggest(record))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_step_that_diverged_does_not_leak_into_the_smoothing():
    rates = list(np.logspace(-5, -2, 30))
    losses = [1.0 - 0.01 * k for k in range(29)] + [50.0]
    record = SweepRecord(rates, losses, diverged_at=rates[-1])
    assert record.stable() == (rates[:-1], losses[:-1])
    # still falling at the end: the cap, not the spike, sets the suggestion
    assert suggest(record) == pytest.approx(rates[-1] / 10)
