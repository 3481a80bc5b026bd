"""Where the data pipeline spends its time: per-stage milliseconds of each sample.

Switched on by ``voltrain train --profile``, which sets ``VOLTRAIN_PROFILE=1`` before the
loader workers are spawned (they inherit the environment). Each sample then carries
``stage_ms``: one float64 per entry of ``STAGES``, from gunpowder's own timing of every
node, grouped by node type:

- ``read``: zarr reads (and ``Normalize`` when it runs on its own);
- ``sample``: drawing the location;
- ``deform``: the elastic resampling; with fused augments, also mirror, intensity and noise;
- ``mirror``, ``intensity``, ``noise``: those augments when they run as separate nodes
  (``intensity`` also counts the gamma, contrast, blur and cutout filters of raw);
- ``target``: targets and loss weights;
- ``other``: the rest of the wall time: samples redrawn after failing ``min_masked``,
  custom augments and gunpowder's own bookkeeping.

A ``StageProfile`` sums them over a run and prints a table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import gunpowder as gp

PROFILE_ENV = "VOLTRAIN_PROFILE"
STAGES: tuple[str, ...] = (
    "read",
    "sample",
    "deform",
    "mirror",
    "intensity",
    "noise",
    "target",
    "other",
)
STAGE_OF_NODE: dict[str, str] = {
    "ZarrSource": "read",
    "RoiMaskSource": "read",
    "Normalize": "read",
    "MaskedRandomLocation": "sample",
    "ElasticAugment": "deform",
    "FusedAugment": "deform",
    "MirrorTransposeAugment": "mirror",
    "IntensityAugment": "intensity",
    "GammaAugment": "intensity",
    "IntensityScaleShift": "intensity",
    "NoiseAugment": "noise",
    "BlurAugment": "intensity",
    "ContrastAugment": "intensity",
    "ClaheAugment": "intensity",
    "CutoutAugment": "intensity",
    "AffinityTarget": "target",
    "BinaryTarget": "target",
}


def profiling_enabled() -> bool:
    """Whether ``VOLTRAIN_PROFILE`` asks for per-stage timings."""
    return os.environ.get(PROFILE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def stage_ms(batch: gp.Batch, total_seconds: float) -> np.ndarray:
    """Milliseconds per entry of ``STAGES`` for one sample that took ``total_seconds``."""
    out = np.zeros(len(STAGES), dtype=np.float64)
    index = {stage: i for i, stage in enumerate(STAGES)}
    for (node, _method), summary in batch.profiling_stats.get_timing_summaries().items():
        stage = STAGE_OF_NODE.get(node, "other")
        out[index[stage]] += 1000.0 * sum(summary.times)
    timed = out.sum()
    out[index["other"]] += max(0.0, 1000.0 * total_seconds - timed)
    return out


class StageProfile:
    """Per-stage milliseconds summed over many samples (a training run, a benchmark)."""

    def __init__(self):
        self.total_ms = np.zeros(len(STAGES), dtype=np.float64)
        self.samples = 0

    def add(self, stage_ms) -> None:
        """Add one sample's ``stage_ms``, or a batch of them (shape ``(batch, stages)``)."""
        values = np.asarray(stage_ms, dtype=np.float64).reshape(-1, len(STAGES))
        self.total_ms += values.sum(axis=0)
        self.samples += len(values)

    def mean_ms(self) -> dict[str, float]:
        """Mean milliseconds per sample of each stage."""
        if self.samples == 0:
            return dict.fromkeys(STAGES, 0.0)
        return {
            stage: float(t) / self.samples for stage, t in zip(STAGES, self.total_ms, strict=True)
        }

    def table(self, title: str = "data pipeline, ms per sample") -> str:
        """The mean of each stage as a text table."""
        return format_stage_table({"voltrain": self.mean_ms()}, title, self.samples)


def format_stage_table(
    columns: Mapping[str, Mapping[str, float]], title: str, samples: int | None = None
) -> str:
    """A text table: one row per stage, one column per pipeline, plus the total."""
    stages = list(dict.fromkeys(stage for column in columns.values() for stage in column))
    width = max(len(stage) for stage in [*stages, "total"]) + 2
    header = "".join(f"{name:>12}" for name in columns)
    lines = [title + (f" ({samples} samples)" if samples is not None else ""), " " * width + header]
    for stage in stages:
        row = "".join(f"{column.get(stage, 0.0):12.1f}" for column in columns.values())
        lines.append(f"{stage:<{width}}" + row)
    totals = "".join(f"{sum(column.values()):12.1f}" for column in columns.values())
    lines.append(f"{'total':<{width}}" + totals)
    return "\n".join(lines)
