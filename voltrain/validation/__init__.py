"""Validation during training: a fixed set of samples, or every block of the gt ROIs."""

from __future__ import annotations

import math

import torch


def validation_results(
    task, loss: float, predictions: list, targets: list, weights: list
) -> dict[str, float]:
    """``validation_loss`` and ``validation_<metric>`` of ``task`` over all the pieces."""
    results = {"validation_loss": loss}
    metrics = task.metric(torch.cat(predictions), torch.cat(targets), torch.cat(weights))
    for name, value in metrics.items():
        results[f"validation_{name}"] = float(value) if value is not None else math.nan
    return results
