import numpy as np
import pytest

from voltrain.baseline import intensity_affinities
from voltrain.errors import ConfigError, DataError
from voltrain.scoring import (
    BASELINE_NAME,
    compare_with_baseline,
    format_scores,
    score_affinities,
    score_with_waterz,
)

NEIGHBORHOOD = [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]


def slabs() -> np.ndarray:
    """Four labelled slabs along x."""
    gt = np.zeros((12, 12, 24), dtype=np.uint64)
    for index in range(4):
        gt[..., index * 6 : (index + 1) * 6] = index + 1
    return gt


def perfect_affinities(gt: np.ndarray) -> np.ndarray:
    affinities = np.ones((3, *gt.shape), dtype=np.float32)
    affinities[0, 1:] = gt[1:] == gt[:-1]
    affinities[1, :, 1:] = gt[:, 1:] == gt[:, :-1]
    affinities[2, :, :, 1:] = gt[..., 1:] == gt[..., :-1]
    return affinities


def test_perfect_affinities_score_zero_voi_and_every_setting_is_scored():
    gt = slabs()
    scores = score_affinities(
        perfect_affinities(gt), gt, NEIGHBORHOOD, (0.3, 0.5, 0.7), sweep=(0.5, 0.7)
    )
    assert scores.best["voi"] < 1e-9 and scores.best["arand"] < 1e-9
    assert set(scores.by_setting) == {(b, t) for b in (0.5, 0.7) for t in (0.3, 0.5, 0.7)}
    for result in scores.by_setting.values():
        assert result["voi"] < 1e-9


def test_the_best_setting_is_the_one_with_the_lowest_voi():
    gt = slabs()
    rng = np.random.default_rng(0)
    noisy = np.clip(perfect_affinities(gt) + rng.normal(0, 0.3, (3, *gt.shape)), 0, 1)
    scores = score_affinities(noisy.astype(np.float32), gt, NEIGHBORHOOD, (0.2, 0.5, 0.8))
    assert scores.best == min(scores.by_setting.values(), key=lambda s: s["voi"])
    assert scores.best is scores.by_setting[scores.best_setting]


def test_all_connected_affinities_are_one_merge():
    gt = slabs()
    ones = np.ones((3, *gt.shape), np.float32)
    scores = score_affinities(ones, gt, NEIGHBORHOOD, (0.5,), sweep=(0.5,))
    assert scores.best["voi_split"] < 1e-9
    assert scores.best["voi_merge"] > 1.9  # log2(4): four equal slabs in one segment


def test_baseline_row_is_scored_on_the_same_volume_and_the_table_lists_every_row():
    gt = slabs()
    raw = np.where(perfect_affinities(gt).min(axis=0) > 0, 200, 20).astype(np.uint8)
    rows = compare_with_baseline(
        {"perfect": perfect_affinities(gt)}, raw, gt, (8, 8, 8), NEIGHBORHOOD, (0.5,)
    )
    assert list(rows) == ["perfect", BASELINE_NAME]
    baseline = score_affinities(
        intensity_affinities(raw, NEIGHBORHOOD, (8, 8, 8)), gt, NEIGHBORHOOD, (0.5,)
    )
    assert rows[BASELINE_NAME].best == baseline.best
    table = format_scores(rows).splitlines()
    assert len(table) == 4 and "VOI split" in table[0]
    assert table[2].startswith("| perfect") and BASELINE_NAME in table[3]


def test_waterz_cross_check_scores_the_same_affinities_and_refuses_other_offsets():
    gt = slabs()
    raw = np.where(perfect_affinities(gt).min(axis=0) > 0, 200, 20).astype(np.uint8)
    rows = compare_with_baseline(
        {"perfect": perfect_affinities(gt)}, raw, gt, (8, 8, 8), NEIGHBORHOOD, segmenter="waterz"
    )
    assert list(rows) == ["perfect", BASELINE_NAME]
    assert rows["perfect"].best["voi"] < 1e-9
    assert "| – |" in format_scores(rows)
    with pytest.raises(DataError, match="neighbourhood"):
        score_with_waterz(perfect_affinities(gt), gt, [[-1, 0, 0], [0, -2, 0], [0, 0, -1]])
    with pytest.raises(ConfigError, match="segmenter"):
        compare_with_baseline({}, raw, gt, (8, 8, 8), NEIGHBORHOOD, segmenter="magic")


def test_the_mutex_variant_sweeps_its_fragment_bias_and_the_table_names_the_parameter():
    gt = slabs()
    rng = np.random.default_rng(1)
    noisy = np.clip(perfect_affinities(gt) + rng.normal(0, 0.2, (3, *gt.shape)), 0, 1)
    noisy = noisy.astype(np.float32)
    mutex = score_affinities(noisy, gt, NEIGHBORHOOD, (0.5,), fragments="mutex", sweep=(0.6,))
    watershed = score_affinities(noisy, gt, NEIGHBORHOOD, (0.5,), sweep=(0.4, 0.6))
    assert set(mutex.by_setting) == {(0.6, 0.5)} and mutex.parameter == "fragment_bias"
    assert set(watershed.by_setting) == {(0.4, 0.5), (0.6, 0.5)}
    assert "| boundary threshold |" in format_scores({"w": watershed}).splitlines()[0]
    assert "| fragment bias |" in format_scores({"m": mutex}).splitlines()[0]
    with pytest.raises(ConfigError, match="fragments"):
        score_affinities(noisy, gt, NEIGHBORHOOD, (0.5,), fragments="waterz")
