"""Gradient processing: every clipping mode bounds what it promises, multipliers reach the
parameters their patterns name, noise replays from (seed, iteration)."""

from __future__ import annotations

import pytest
import torch

from voltrain.errors import ConfigError
from voltrain.trainers.gradients import ClippingConfig, GradientNoiseConfig, GradientProcessor


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def _set_grads(model: torch.nn.Module, scale: float, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = scale * torch.randn(p.shape, generator=generator)


def _processor(model, noise=None, multipliers=None, **clipping) -> GradientProcessor:
    return GradientProcessor(
        ClippingConfig(**clipping), noise, multipliers or {}, model, torch.device("cpu"), seed=3
    )


def _process(processor, model, iteration=0):
    return processor.process(list(model.parameters()), torch.tensor(0.5), iteration)


def _global_norm(model) -> float:
    return float(
        torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    )


def test_global_norm_clipping_bounds_the_joint_norm_and_reports_it_before():
    model = _model()
    _set_grads(model, 10.0)
    before = _global_norm(model)
    grad_norm, finite = _process(_processor(model, mode="global_norm", max_norm=0.5), model)
    assert float(grad_norm) == pytest.approx(before, rel=1e-5) and before > 0.5
    assert _global_norm(model) == pytest.approx(0.5, rel=1e-4) and bool(finite)


def test_norm_clipping_bounds_each_tensor():
    model = _model()
    _set_grads(model, 10.0)
    _process(_processor(model, mode="norm", max_norm=0.3), model)
    norms = [float(torch.linalg.vector_norm(p.grad)) for p in model.parameters()]
    assert max(norms) <= 0.3 * 1.0001 and min(norms) > 0.29


def test_value_clipping_bounds_every_element():
    model = _model()
    _set_grads(model, 10.0)
    _process(_processor(model, mode="value", value=0.2), model)
    assert max(float(p.grad.abs().max()) for p in model.parameters()) == pytest.approx(0.2)


def test_adaptive_clipping_caps_a_spike_at_factor_times_the_average():
    model = _model()
    processor = _processor(model, mode="adaptive", factor=2.0, ema_decay=0.9)
    for seed in range(5):
        _set_grads(model, 1.0, seed)
        _process(processor, model, seed)
    average = float(processor.adaptive_limit) / 2.0
    _set_grads(model, 100.0, seed=9)
    grad_norm, _ = _process(processor, model, 5)
    assert float(grad_norm) > 50 * average
    assert _global_norm(model) == pytest.approx(2.0 * average, rel=1e-4)
    # The capped norm, not the spike, enters the average.
    assert float(processor.adaptive_limit) <= 2.0 * 2.0 * average


def test_adaptive_state_ignores_non_finite_steps_and_round_trips():
    model = _model()
    processor = _processor(model, mode="adaptive")
    _set_grads(model, 1.0)
    _process(processor, model)
    state = processor.state_dict()
    _set_grads(model, 1.0)
    next(model.parameters()).grad[0, 0] = float("nan")
    _, finite = _process(processor, model, 1)
    assert not bool(finite)
    assert torch.equal(processor.state_dict()["ema_sum"], state["ema_sum"])
    restored = _processor(model, mode="adaptive")
    restored.load_state_dict(state)
    assert torch.equal(restored.adaptive_limit, processor.adaptive_limit)


def test_multipliers_scale_only_the_parameters_their_patterns_name():
    model = _model()
    _set_grads(model, 1.0)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    multipliers = {"2.*": 0.0, "re:0\\.bi.s": 3.0, "*": 1.0}
    _process(_processor(model, multipliers=multipliers, mode="none"), model)
    grads = dict(model.named_parameters())
    assert torch.equal(grads["2.weight"].grad, torch.zeros_like(before["2.weight"]))
    assert torch.equal(grads["2.bias"].grad, torch.zeros_like(before["2.bias"]))
    assert torch.equal(grads["0.bias"].grad, 3.0 * before["0.bias"])
    assert torch.equal(grads["0.weight"].grad, before["0.weight"])


def test_a_pattern_that_matches_nothing_is_a_config_error():
    with pytest.raises(ConfigError, match="gradient_multipliers: 'decoder.*' matches no parameter"):
        _processor(_model(), multipliers={"decoder.*": 0.5})


def test_noise_replays_from_seed_and_iteration_and_decays():
    model = _model()
    noise = GradientNoiseConfig(eta=1.0, gamma=0.55)
    processor = _processor(model, noise=noise, mode="none")

    def noise_at(iteration: int) -> torch.Tensor:
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        _process(processor, model, iteration)
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    first, again, late = noise_at(0), noise_at(0), noise_at(99)
    assert torch.equal(first, again)
    assert float(first.std()) == pytest.approx(1.0, rel=0.2)
    assert float(late.std()) == pytest.approx(100**-0.55, rel=0.2)
