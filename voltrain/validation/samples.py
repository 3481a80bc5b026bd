"""Validation: the loss (and the task's metrics) on a fixed set of validation samples.

The samples come from a ``TrainingPipeline`` over ``data.validate`` without augments, drawn
once with fixed seeds in the training process and kept, so every validation scores the
same voxels and the figures are comparable across iterations and resumed runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from voltrain.pipeline import TrainingPipeline
from voltrain.seeding import derive_seed
from voltrain.validation import validation_results

# Separates the validation samples' seeds from the training samples'.
VALIDATION_STREAM = 0x76616C69


class Validator:
    """Scores a model on ``num_samples`` fixed samples of ``pipeline``.

    Args:
        pipeline: a pipeline over the validation datasets, without augments.
        task: the runtime task (loss, activation, metrics).
        seed: the trainer seed; sample i uses a seed derived from (seed, i).
        num_samples: how many samples.
        batch_size: samples per forward pass.
        device: where the model runs.
    """

    def __init__(
        self,
        pipeline: TrainingPipeline,
        task,
        seed: int,
        num_samples: int,
        batch_size: int,
        device: torch.device,
    ):
        self.pipeline = pipeline
        self.task = task
        self.seed = seed
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.device = torch.device(device)
        self._samples: list[dict[str, np.ndarray]] | None = None

    def samples(self) -> list[dict[str, np.ndarray]]:
        """The validation samples (drawn on first use, then kept)."""
        if self._samples is None:
            self._samples = [
                self.pipeline.request_sample(derive_seed(self.seed, VALIDATION_STREAM, i))
                for i in range(self.num_samples)
            ]
            self.pipeline.teardown()
        return self._samples

    def evaluate(
        self, model: torch.nn.Module, autocast: Callable = contextlib.nullcontext
    ) -> dict[str, float]:
        """``validation_loss`` (mean over samples) and ``validation_<metric>`` of the task.

        ``autocast`` makes the context of the forward passes (the training step's autocast).
        """
        samples = self.samples()
        was_training = model.training
        model.eval()
        losses, predictions, targets, weights = [], [], [], []
        try:
            with torch.no_grad():
                for begin in range(0, len(samples), self.batch_size):
                    chunk = samples[begin : begin + self.batch_size]
                    raw, target, weight = (
                        torch.from_numpy(np.stack([s[key] for s in chunk])).to(self.device)
                        for key in ("raw", "target", "weight")
                    )
                    with autocast():
                        logits = model(raw)
                    logits = logits.float()
                    for i in range(len(chunk)):
                        one = slice(i, i + 1)
                        losses.append(self.task.loss(logits[one], target[one], weight[one]))
                    predictions.append(self.task.activation(logits).cpu())
                    targets.append(target.cpu())
                    weights.append(weight.cpu())
        finally:
            model.train(was_training)
        loss = float(torch.stack(losses).mean())
        return validation_results(self.task, loss, predictions, targets, weights)
