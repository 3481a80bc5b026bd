"""An optimizer step that is skipped on the device when a flag says the step is not finite.

Zeroing a bad gradient is not enough: Adam's momentum would still move the weights. Two
ways to skip the whole update without reading the flag back to the host:

- Fused Adam, AdamW and SGD take a ``found_inf`` tensor (the hook ``torch.amp.GradScaler``
  uses). Their kernels leave weights and state untouched when it is nonzero, and Adam takes
  its step counter back. voltrain builds these optimizers fused.
- Any other optimizer steps as usual, then every weight and state tensor is put back with
  ``torch.where(finite, new, old)`` from copies taken before the step (state created by the
  step is put back to zero). ``torch.where`` never lets a NaN through from the side it does
  not select. This costs a copy of weights and state per step.

Only state kept on another device than the flag (or outside tensors) forces a read of the
flag; voltrain's own optimizers keep none there (RAdam is built ``capturable`` on CUDA).
"""

from __future__ import annotations

import torch

_FOUND_INF_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` honours a ``found_inf`` flag in its own kernel."""
    return type(optimizer) in _FOUND_INF_OPTIMIZERS and all(
        group.get("fused") for group in optimizer.param_groups
    )


def guarded_step(optimizer: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """``optimizer.step()`` that changes nothing (weights, state) where ``finite`` is False."""
    if skips_on_device(optimizer):
        optimizer.found_inf = (~finite).to(torch.float32)
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
        return
    _step_and_restore(optimizer, finite)


def _step_and_restore(optimizer: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    parameters = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    saved = {}
    for p in parameters:
        state = optimizer.state.get(p, {})
        saved[p] = (p.detach().clone(), {k: _copy(v) for k, v in state.items()})
    optimizer.step()
    flags: dict[torch.device, torch.Tensor] = {}
    host_flag: list[bool] = []

    def flag_on(device: torch.device) -> torch.Tensor:
        if device not in flags:
            flags[device] = finite.to(device)
        return flags[device]

    with torch.no_grad():
        for p in parameters:
            old_weight, old_state = saved[p]
            p.copy_(torch.where(flag_on(p.device), p, old_weight))
            state = optimizer.state[p]
            for key, value in state.items():
                old = old_state.get(key)
                if torch.is_tensor(value):
                    old = torch.zeros_like(value) if old is None else old
                    value.copy_(torch.where(flag_on(value.device), value, old))
                elif old is not None and value != old:
                    if not host_flag:
                        host_flag.append(bool(finite))
                    if not host_flag[0]:
                        state[key] = old


def _copy(value):
    return value.detach().clone() if torch.is_tensor(value) else value
