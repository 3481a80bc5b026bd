"""A step flagged non-finite changes neither weights nor optimizer state, for every optimizer
voltrain builds, and the next finite step trains as usual."""

from __future__ import annotations

import pytest
import torch

from voltrain.optim import AdamConfig, SGDConfig, build_optimizer
from voltrain.trainers.guarded_step import guarded_step, skips_on_device

CONFIGS = {
    "adam": AdamConfig(type="adam"),
    "adamw": AdamConfig(type="adamw", weight_decay=0.1),
    "radam": AdamConfig(type="radam"),
    "sgd": SGDConfig(momentum=0.9, nesterov=True, weight_decay=0.01),
}


def _snapshot(model, optimizer):
    weights = [p.detach().clone() for p in model.parameters()]
    state = [
        {k: v.clone() if torch.is_tensor(v) else v for k, v in optimizer.state[p].items()}
        for p in model.parameters()
    ]
    return weights, state


def _equal(a, b) -> bool:
    weights_a, state_a = a
    weights_b, state_b = b
    same_weights = all(torch.equal(x, y) for x, y in zip(weights_a, weights_b, strict=True))
    same_state = all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        for x, y in zip(state_a, state_b, strict=True)
    )
    return same_weights and same_state


def _step(model, optimizer, grad_value=None):
    for p in model.parameters():
        p.grad = torch.randn_like(p) if grad_value is None else torch.full_like(p, grad_value)
    grads = [p.grad for p in model.parameters()]
    finite = torch.isfinite(torch.nn.utils.get_total_norm(grads))
    guarded_step(optimizer, finite)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_step_leaves_weights_and_state_bitwise_unchanged(name, bad):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(CONFIGS[name], model.parameters(), lr=0.1)
    for _ in range(2):
        _step(model, optimizer)
    before = _snapshot(model, optimizer)
    _step(model, optimizer, bad)
    assert _equal(before, _snapshot(model, optimizer))
    _step(model, optimizer)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not _equal(before, _snapshot(model, optimizer))


def test_non_finite_first_step_leaves_state_as_fresh():
    model = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(CONFIGS["radam"], model.parameters(), lr=0.1)
    weights = [p.detach().clone() for p in model.parameters()]
    _step(model, optimizer, float("nan"))
    assert all(torch.equal(w, p) for w, p in zip(weights, model.parameters(), strict=True))
    assert all(float(s["step"]) == 0 for s in optimizer.state.values())


def test_fused_optimizers_skip_in_their_own_kernel():
    model = torch.nn.Linear(3, 2)
    assert skips_on_device(build_optimizer(CONFIGS["adam"], model.parameters(), 0.1))
    assert skips_on_device(build_optimizer(CONFIGS["sgd"], model.parameters(), 0.1))
    assert not skips_on_device(torch.optim.Adam(model.parameters()))
