"""``TrainingIterationStats``: what one training iteration reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class TrainingIterationStats:
    """What one training iteration reports.

    The ``*_tensor`` fields stay on the training device until they are read: reading them
    (``loss``, ``grad_norm``, ``skipped_steps``...) syncs with the device, so a caller reads
    them only when it logs (``log_due``).

    Attributes:
        iteration: the iteration this step produced (1 after the first step).
        time: seconds of this iteration, data wait included (host time: without a read of
            the loss, device work may still be queued).
        data_time: seconds waiting for the batch.
        learning_rate: the learning rate of this step.
        batch_size: samples in this step.
        log_due: whether this is a logging iteration (the trainer read the skip counters).
        validation: validation results when this iteration validated, else None.
        snapshot: when a callback asked for it (``Callback.wants_snapshot``), the first
            sample's arrays by name (``voltrain.run.snapshot.SnapshotArray``), else None.
        data_errors: sample draws so far that met an unreadable chunk and were redrawn
            (``trainer.on_data_error: skip``); in the row only once there are some.
        figures_tensors: further device scalars a trainer reports by name (e.g. the
            semi-supervised ``consistency_loss``), read like the loss.
    """

    iteration: int
    time: float
    data_time: float
    learning_rate: float
    loss_tensor: torch.Tensor = field(repr=False)
    grad_norm_tensor: torch.Tensor | None = field(default=None, repr=False)
    finite_tensor: torch.Tensor | None = field(default=None, repr=False)
    skipped_steps_tensor: torch.Tensor | None = field(default=None, repr=False)
    amp_skipped_steps_tensor: torch.Tensor | None = field(default=None, repr=False)
    batch_size: int = 1
    log_due: bool = False
    validation: dict[str, float] | None = None
    snapshot: dict[str, Any] | None = field(default=None, repr=False)
    data_errors: int = 0
    figures_tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def loss(self) -> float:
        return float(self.loss_tensor)

    @property
    def grad_norm(self) -> float | None:
        """The global gradient norm before clipping."""
        return None if self.grad_norm_tensor is None else float(self.grad_norm_tensor)

    @property
    def finite(self) -> bool:
        """Whether this step was applied (loss and gradients finite)."""
        return True if self.finite_tensor is None else bool(self.finite_tensor)

    @property
    def skipped_steps(self) -> int:
        """Steps skipped so far because the loss or a gradient was not finite."""
        return _count(self.skipped_steps_tensor)

    @property
    def amp_skipped_steps(self) -> int:
        """fp16 steps skipped so far for a gradient overflow (the loss scale then drops)."""
        return _count(self.amp_skipped_steps_tensor)

    @property
    def samples_per_second(self) -> float:
        return self.batch_size / max(self.time, 1e-9)

    def as_dict(self) -> dict:
        """All figures as plain numbers (syncs with the device)."""
        row = {
            "iteration": self.iteration,
            "loss": self.loss,
            "grad_norm": self.grad_norm,
            "learning_rate": self.learning_rate,
            "time": self.time,
            "data_time": self.data_time,
            "samples_per_second": self.samples_per_second,
            "skipped_steps": self.skipped_steps,
            "amp_skipped_steps": self.amp_skipped_steps,
        }
        if self.data_errors:
            row["data_errors"] = self.data_errors
        row.update({name: float(value) for name, value in self.figures_tensors.items()})
        if self.validation:
            row.update(self.validation)
        return row


def _count(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else int(tensor)
