"""``RunResult``: where a training run left its outputs and how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunResult:
    """Where a run left its outputs and how it ended."""

    out_dir: Path
    iteration: int
    last_loss: float | None
    checkpoint: Path | None
    snapshots: Path
    best_checkpoint: Path | None = None
    stopped_early: bool = False
    is_main: bool = True
    profile_table: str | None = None
