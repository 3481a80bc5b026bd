"""Experiment configs for tests: a small, fast U-Net over a synthetic volume."""

from __future__ import annotations

from pathlib import Path


def experiment_dict(container: Path, **trainer) -> dict:
    """A small, fast experiment: a one-level U-Net (input 36^3 -> output 20^3)."""
    config = {
        "data": {
            "train": [
                {
                    "name": "cells",
                    "raw": str(container / "raw"),
                    "gt": str(container / "labels"),
                    "mask": str(container / "mask"),
                }
            ]
        },
        "model": {"num_fmaps": 2, "fmap_inc_factor": 2, "downsample_factors": [[2, 2, 2]]},
        "task": {"type": "affinities"},
        "trainer": {
            "type": "gunpowder",
            "batch_size": 2,
            "learning_rate": 0.001,
            "input_shape": [36, 36, 36],
            "num_data_fetchers": 0,
            "min_masked": 0.3,
            "snapshot_interval": 0,
            "checkpoint_interval": 0,
            "log_every": 1,
            "max_steps": 4,
        },
    }
    config["trainer"].update(trainer)
    return config
