"""One optimisation step, kept free of host syncs so the device never waits on Python.

Order: forward under autocast (bf16, or fp16 with a ``GradScaler``), loss, backward, unscale
(fp16), gradient multipliers, gradient noise, global norm, clipping, then an optimizer step
that the device skips when the loss or a gradient is not finite (``guarded_step``). Counts
of skipped steps accumulate in device tensors; the trainer reads them at its logging
interval.

With several ranks (torchrun), the model runs inside ``DistributedDataParallel``, which
averages the gradients over the ranks during backward; everything after backward (noise,
norm, clipping, the finite flag) therefore sees the same averaged gradients on every rank.
The loss that decides the finite flag, and that is reported, is the mean over the ranks, so
every rank skips the same steps and the replicas never drift apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from voltrain import distributed
from voltrain.trainers.gradients import GradientProcessor
from voltrain.trainers.guarded_step import guarded_step

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class StepResult:
    """Device tensors from one step; reading them as floats syncs with the device."""

    loss: torch.Tensor
    grad_norm: torch.Tensor
    finite: torch.Tensor
    logits: torch.Tensor | None = None
    logits_grad: torch.Tensor | None = None
    # further figures of the step by name (device scalars), for the metrics row
    figures: dict[str, torch.Tensor] = field(default_factory=dict)


class StepEngine:
    """Runs steps of one model with one optimizer on one device.

    Attributes:
        network: the model as the step runs it (in ``DistributedDataParallel`` when several
            ranks train).
        skipped_steps: device count of steps skipped because the loss or a gradient was not
            finite (under fp16, only those where the loss itself was not finite).
        amp_skipped_steps: device count of fp16 steps skipped for a gradient overflow, which
            the loss scaler answers by lowering its scale; expected now and then.
        first_bad_iteration: device int, the first iteration whose step was skipped as
            non-finite (-1: none).
    """

    def __init__(self, config, model: torch.nn.Module, optimizer, device: torch.device):
        self.model = model
        self.network = distributed.wrap_model(model, device)
        self.optimizer = optimizer
        self.device = device
        self.amp_dtype = AMP_DTYPES.get(config.amp)
        self.scaler = torch.amp.GradScaler(device.type) if config.amp == "fp16" else None
        self.gradients = GradientProcessor(
            config.clipping,
            config.gradient_noise,
            config.gradient_multipliers,
            model,
            device,
            config.seed,
        )
        self.skipped_steps = torch.zeros((), dtype=torch.int64, device=device)
        self.amp_skipped_steps = torch.zeros((), dtype=torch.int64, device=device)
        self.first_bad_iteration = torch.full((), -1, dtype=torch.int64, device=device)

    def autocast(self):
        """The autocast context of forward passes (training and validation)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def step(
        self,
        task,
        raw: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor,
        iteration: int,
        keep_output: bool = False,
        extra_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> StepResult:
        """The step that produces ``iteration + 1``. With ``keep_output`` the network output
        and the loss gradient with respect to it are kept, for snapshots.

        ``raw`` may hold more samples than ``target``: the task's loss scores the first
        ``len(target)`` outputs, and ``extra_loss`` (given all the float32 logits) adds a
        loss of its own, e.g. a consistency loss on unlabeled samples that shared the one
        forward pass (which is what ``DistributedDataParallel`` needs).
        """
        model, optimizer = self.model, self.optimizer
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.network(raw)
        logits = logits.float()
        if keep_output:
            logits.retain_grad()
        loss = task.loss(logits[: target.shape[0]], target, weight)
        if extra_loss is not None:
            loss = loss + extra_loss(logits)
        scale = None
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(optimizer)
            scale = self.scaler.get_scale() if keep_output else None
        else:
            loss.backward()
        # Every rank must reach the same verdict on the step: judge the mean loss.
        loss = distributed.mean_over_ranks(loss.detach())
        parameters = [p for p in model.parameters() if p.grad is not None]
        grad_norm, finite = self.gradients.process(parameters, loss, iteration)
        guarded_step(optimizer, finite)
        if self.scaler is not None:
            self.scaler.update()
        self._count(finite, torch.isfinite(loss), iteration)
        logits_grad = None
        if keep_output:
            logits_grad = logits.grad.detach() / (scale or 1.0)
        return StepResult(
            loss=loss,
            grad_norm=grad_norm.detach(),
            finite=finite,
            logits=logits.detach() if keep_output else None,
            logits_grad=logits_grad,
        )

    def _count(self, finite: torch.Tensor, loss_finite: torch.Tensor, iteration: int) -> None:
        if self.scaler is not None:
            # Under fp16 an overflowing gradient with a finite loss is the scaler's business.
            bad = ~loss_finite
            self.amp_skipped_steps.add_((~finite & loss_finite).to(torch.int64))
        else:
            bad = ~finite
        self.skipped_steps.add_(bad.to(torch.int64))
        first = (self.first_bad_iteration < 0) & bad
        self.first_bad_iteration.copy_(torch.where(first, iteration + 1, self.first_bad_iteration))

    def state_dict(self) -> dict:
        return {
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "gradients": self.gradients.state_dict(),
            "skipped_steps": self.skipped_steps.cpu(),
            "amp_skipped_steps": self.amp_skipped_steps.cpu(),
            "first_bad_iteration": self.first_bad_iteration.cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.gradients.load_state_dict(state["gradients"])
        for name in ("skipped_steps", "amp_skipped_steps", "first_bad_iteration"):
            getattr(self, name).copy_(state[name])
