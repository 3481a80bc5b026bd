"""Score affinities the way a connectomics user judges them: segment, then count errors.

``score_affinities`` segments (C, z, y, x) affinities with ``voltrain.segment.segment_array``
for every pair of fragment parameter (the seeded watershed's boundary threshold, or the
mutex watershed's fragment bias) and agglomeration threshold, and scores each segmentation
against ground truth with ``voltrain.evaluate.evaluate_segmentation``; the pair with the
lowest VOI (split + merge) is reported, as DaCapo's post-processing parameter sweep does.
Every set of affinities gets the same sweep, so none is favoured by the choice of
parameters. ``compare_with_baseline`` scores a
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
from voltrain.errors import ConfigError, DataError
from voltrain.evaluate import evaluate_segmentation
from voltrain.segment import SegmentConfig, segment_array

DEFAULT_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)
# The one fragment parameter that decides how readily fragments grow across weak boundaries
# (the seeded watershed's boundary threshold, the mutex watershed's bias); which value suits
# depends on how the affinities are calibrated, so it is swept too.
FRAGMENT_PARAMETERS = {"watershed": "boundary_threshold", "mutex": "fragment_bias"}
DEFAULT_SWEEPS = {"watershed": (0.3, 0.5, 0.7), "mutex": (0.5, 0.7, 0.9)}
WATERZ_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
NEAREST_NEIGHBOURS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]
BASELINE_NAME = "no learning (raw intensity)"


@dataclass
class Scores:
    """The scores of one set of affinities: the best setting's, and every setting's.

    Args:
        best_setting: the (fragment parameter, threshold) with the lowest VOI.
        best: ``evaluate_segmentation``'s dict at that setting.
        by_setting: that dict for every (fragment parameter, threshold) tried.
        seconds: time spent segmenting and scoring.
        parameter: the fragment parameter's ``SegmentConfig`` key; ``""`` when none.
    """

    best_setting: tuple[float, float]
    best: dict
    by_setting: dict[tuple[float, float], dict] = field(default_factory=dict)
    seconds: float = 0.0
    parameter: str = ""


def score_affinities(
    affinities: np.ndarray,
    gt: np.ndarray,
    neighborhood: Sequence[Sequence[int]],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    mask: np.ndarray | None = None,
    fragments: str = "watershed",
    sweep: Sequence[float] | None = None,
    voxel_size: Sequence[float] | None = None,
) -> Scores:
    """Segment ``affinities`` with every fragment parameter and threshold; score each.

    ``fragments``: ``segment.fragments`` (``watershed`` or ``mutex``); ``sweep``: the values
    of its parameter (``FRAGMENT_PARAMETERS``), default ``DEFAULT_SWEEPS``; ``voxel_size``
    scales the watershed's distances.
    """
    if fragments not in FRAGMENT_PARAMETERS:
        raise ConfigError(f"fragments must be 'watershed' or 'mutex', got '{fragments}'")
    parameter = FRAGMENT_PARAMETERS[fragments]
    start = time.perf_counter()
    by_setting = {}
    for value in DEFAULT_SWEEPS[fragments] if sweep is None else sweep:
        config = SegmentConfig(block_shape=None, fragments=fragments, **{parameter: value})
        segmentations = segment_array(
            affinities, neighborhood, thresholds, mask, config, voxel_size
        )
        for threshold, segmentation in segmentations.items():
            scores = evaluate_segmentation(segmentation, gt, mask)
            by_setting[(float(value), float(threshold))] = scores
    best_setting = min(by_setting, key=lambda setting: by_setting[setting]["voi"])
    seconds = time.perf_counter() - start
    return Scores(best_setting, by_setting[best_setting], by_setting, seconds, parameter)


def score_with_waterz(
    affinities: np.ndarray,
    gt: np.ndarray,
    neighborhood: Sequence[Sequence[int]],
    thresholds: Sequence[float] = WATERZ_THRESHOLDS,
    mask: np.ndarray | None = None,
) -> Scores:
    """Like ``score_affinities``, but segmented by waterz (watershed fragments, mean-affinity
    agglomeration): a cross-check that separates the segmentation step's errors from the
    affinities'. Settings are (nan, threshold): waterz has no fragment bias."""
    import waterz

    if [list(map(int, offset)) for offset in neighborhood] != NEAREST_NEIGHBOURS:
        raise DataError(f"waterz needs the neighbourhood {NEAREST_NEIGHBOURS}, got {neighborhood}")
    start = time.perf_counter()
    thresholds = sorted(float(t) for t in thresholds)
    segmentations = waterz.agglomerate(np.ascontiguousarray(affinities, np.float32), thresholds)
    by_setting = {
        (float("nan"), threshold): evaluate_segmentation(segmentation.copy(), gt, mask)
        for threshold, segmentation in zip(thresholds, segmentations, strict=True)
    }
    best_setting = min(by_setting, key=lambda setting: by_setting[setting]["voi"])
    return Scores(best_setting, by_setting[best_setting], by_setting, time.perf_counter() - start)


def compare_with_baseline(
    model_affinities: Mapping[str, np.ndarray],
    raw: np.ndarray,
    gt: np.ndarray,
    voxel_size: Sequence[float],
    neighborhood: Sequence[Sequence[int]],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    mask: np.ndarray | None = None,
    fragments: str = "watershed",
    sweep: Sequence[float] | None = None,
    segmenter: str = "voltrain",
) -> dict[str, Scores]:
    """Scores of each named model's affinities and of the no-learning baseline, in order.

    ``segmenter``: ``voltrain`` (``score_affinities`` with ``fragments`` and ``sweep``) or
    ``waterz`` (``score_with_waterz``; ``thresholds``, ``fragments`` and ``sweep`` unused).
    """
    if segmenter == "voltrain":

        def score(affinities: np.ndarray) -> Scores:
            return score_affinities(
                affinities, gt, neighborhood, thresholds, mask, fragments, sweep, voxel_size
            )

    elif segmenter == "waterz":

        def score(affinities: np.ndarray) -> Scores:
            return score_with_waterz(affinities, gt, neighborhood, mask=mask)

    else:
        raise ConfigError(f"segmenter must be 'voltrain' or 'waterz', got '{segmenter}'")
    rows = {name: score(affinities) for name, affinities in model_affinities.items()}
    rows[BASELINE_NAME] = score(intensity_affinities(raw, neighborhood, voxel_size))
    return rows


def format_scores(rows: Mapping[str, Scores]) -> str:
    """A Markdown table: VOI split, merge and sum, ARAND, and each row's best setting."""
    name_width = max(len("affinities"), *(len(name) for name in rows))
    parameters = {scores.parameter for scores in rows.values()} - {""}
    parameter = parameters.pop().replace("_", " ") if len(parameters) == 1 else "fragments"
    lines = [
        f"| {'affinities':<{name_width}} | VOI split | VOI merge | VOI | ARAND "
        f"| {parameter} | threshold |",
        f"|{'-' * (name_width + 2)}|---:|---:|---:|---:|---:|---:|",
    ]
    for name, scores in rows.items():
        best = scores.best
        lines.append(
            f"| {name:<{name_width}} | {best['voi_split']:.3f} | {best['voi_merge']:.3f} "
            f"| {best['voi']:.3f} | {best['arand']:.3f} | {_setting(scores.best_setting[0])} "
            f"| {scores.best_setting[1]:g} |"
        )
    return "\n".join(lines)


def _setting(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:g}"
