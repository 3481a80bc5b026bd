"""Score affinities the way a connectomics user judges them: segment, then count errors.

``score_affinities`` segments (C, z, y, x) affinities at several agglomeration thresholds
with ``voltrain.segment.segment_array`` and scores each segmentation against ground truth
with ``voltrain.evaluate.evaluate_segmentation``; the threshold with the lowest VOI (split +
merge) is reported, as DaCapo's post-processing sweep does. ``compare_with_baseline`` scores a
trained model's affinities beside the no-learning baseline's (``voltrain.baseline``) on the
same volume, and ``format_scores`` prints them as one table. The demo and
``benchmarks/quality.py`` report through them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from voltrain.baseline import intensity_affinities
from voltrain.evaluate import evaluate_segmentation
from voltrain.segment import segment_array

DEFAULT_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)
BASELINE_NAME = "no learning (raw intensity)"


@dataclass
class Scores:
    """The scores of one set of affinities: the best threshold's, and all thresholds'.

    Args:
        best_threshold: the threshold with the lowest VOI.
        best: ``evaluate_segmentation``'s dict at that threshold.
        by_threshold: that dict for every threshold tried.
        seconds: time spent segmenting and scoring.
    """

    best_threshold: float
    best: dict
    by_threshold: dict[float, dict] = field(default_factory=dict)
    seconds: float = 0.0


def score_affinities(
    affinities: np.ndarray,
    gt: np.ndarray,
    neighborhood: Sequence[Sequence[int]],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    mask: np.ndarray | None = None,
) -> Scores:
    """Segment ``affinities`` at every threshold and score each against ``gt``."""
    start = time.perf_counter()
    segmentations = segment_array(affinities, neighborhood, thresholds, mask=mask)
    by_threshold = {
        float(threshold): evaluate_segmentation(segmentation, gt, mask)
        for threshold, segmentation in segmentations.items()
    }
    best_threshold = min(by_threshold, key=lambda t: by_threshold[t]["voi"])
    return Scores(
        best_threshold,
        by_threshold[best_threshold],
        by_threshold,
        time.perf_counter() - start,
    )


def compare_with_baseline(
    model_affinities: Mapping[str, np.ndarray],
    raw: np.ndarray,
    gt: np.ndarray,
    voxel_size: Sequence[float],
    neighborhood: Sequence[Sequence[int]],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    mask: np.ndarray | None = None,
) -> dict[str, Scores]:
    """Scores of each named model's affinities and of the no-learning baseline, in order."""
    rows = {
        name: score_affinities(affinities, gt, neighborhood, thresholds, mask)
        for name, affinities in model_affinities.items()
    }
    baseline = intensity_affinities(raw, neighborhood, voxel_size)
    rows[BASELINE_NAME] = score_affinities(baseline, gt, neighborhood, thresholds, mask)
    return rows


def format_scores(rows: Mapping[str, Scores]) -> str:
    """A Markdown table: VOI split, merge and sum, ARAND, and the best threshold per row."""
    name_width = max(len("affinities"), *(len(name) for name in rows))
    lines = [
        f"| {'affinities':<{name_width}} | VOI split | VOI merge | VOI | ARAND | threshold |",
        f"|{'-' * (name_width + 2)}|---:|---:|---:|---:|---:|",
    ]
    for name, scores in rows.items():
        best = scores.best
        lines.append(
            f"| {name:<{name_width}} | {best['voi_split']:.3f} | {best['voi_merge']:.3f} "
            f"| {best['voi']:.3f} | {best['arand']:.3f} | {scores.best_threshold:g} |"
        )
    return "\n".join(lines)
