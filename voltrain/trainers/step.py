"""One optimisation step, kept free of host syncs so the device never waits on Python."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepResult:
    """Device tensors from one step; reading them as floats syncs with the device."""

    loss: torch.Tensor
    grad_norm: torch.Tensor
    logits: torch.Tensor | None = None
    logits_grad: torch.Tensor | None = None


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    task,
    raw: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    max_norm: float | None,
    norm_type: float = 2.0,
    keep_output: bool = False,
) -> StepResult:
    """Forward, weighted loss, backward, gradient clipping on the device, optimizer step.

    The total gradient norm (before clipping) is computed and applied on the device: no
    ``.item()`` or comparison in Python, so a CUDA step is queued without waiting. With
    ``keep_output`` the network output and the loss gradient with respect to it are kept,
    for snapshots.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    logits = model(raw)
    if keep_output:
        logits.retain_grad()
    loss = task.loss(logits, target, weight)
    loss.backward()
    parameters = [p for p in model.parameters() if p.grad is not None]
    grads = [p.grad for p in parameters]
    grad_norm = torch.nn.utils.get_total_norm(grads, norm_type, foreach=True)
    if max_norm is not None:
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, grad_norm, foreach=True)
    optimizer.step()
    return StepResult(
        loss=loss.detach(),
        grad_norm=grad_norm.detach(),
        logits=logits.detach() if keep_output else None,
        logits_grad=logits.grad.detach() if keep_output else None,
    )
