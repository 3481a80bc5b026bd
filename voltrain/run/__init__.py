"""A training run and the files of its run directory: checkpoints, snapshots, resume.

``train``, ``TrainingRun``, ``RunResult`` and ``resolve_device`` are what ``voltrain train``
and orchestration tools call.
"""

from __future__ import annotations

from typing import Any

_PUBLIC = ("RunResult", "TrainingRun", "config_hash", "resolve_device", "train")

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    # Imported on first use: the trainers import this package's snapshot writer.
    if name == "RunResult":
        from voltrain.run.result import RunResult

        return RunResult
    if name in _PUBLIC:
        from voltrain.run import training

        return getattr(training, name)
    raise AttributeError(f"module 'voltrain.run' has no attribute '{name}'")
