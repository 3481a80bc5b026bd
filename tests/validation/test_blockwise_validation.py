"""Blockwise validation: its loss and metrics equal one whole-volume computation, they are
logged, best.pt follows the chosen metric, and a metric the task lacks is a config error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from funlib.geometry import Roi
from funlib.persistence import open_ds

from tests.helpers import experiment_dict
from voltrain.errors import ConfigError
from voltrain.experiment import parse_config
from voltrain.run import TrainingRun, train
from voltrain.synthetic import make_synthetic_volume

VOXEL = 8
CONTEXT = 8  # voxels: the tiny U-Net maps 36^3 to 20^3
NEIGHBORHOOD = [(-1, 0, 0), (0, -1, 0), (0, 0, -1)]


@pytest.fixture(scope="module")
def validation_volume(tmp_path_factory):
    """40^3 voxels, 60% masked: 2 blocks per axis, the second overhanging by 0 voxels."""
    container = tmp_path_factory.mktemp("validate") / "validate.zarr"
    make_synthetic_volume(
        container,
        shape=(40, 40, 40),
        voxel_size=(VOXEL,) * 3,
        offset=(8, 16, 24),
        num_cells=8,
        mask_fraction=0.6,
        chunk_shape=(20, 20, 20),
        seed=3,
    )
    return container


def _raw(volume, validation_volume, task: dict, **trainer) -> dict:
    raw = experiment_dict(volume, batch_size=1, validation_interval=1, **trainer)
    raw["task"] = task
    raw["data"]["validate"] = [
        {
            "raw": str(validation_volume / "raw"),
            "gt": str(validation_volume / "labels"),
            "mask": str(validation_volume / "mask"),
        }
    ]
    return raw


def _padded(array, roi: Roi, pad: int) -> np.ndarray:
    """``array`` over ``roi`` grown by ``pad`` voxels, zeros outside the array."""
    grown = roi.grow((pad * VOXEL,) * 3, (pad * VOXEL,) * 3)
    data = np.zeros(grown.shape / VOXEL, dtype=np.float64)
    inside = grown.intersect(array.roi)
    begin = (inside.begin - grown.begin) / VOXEL
    end = begin + inside.shape / VOXEL
    data[tuple(slice(b, e) for b, e in zip(begin, end, strict=True))] = array[inside]
    return data


def _whole_volume_scores(model, container, task_type: str) -> dict[str, float]:
    """Loss and metric of one forward pass over the gt ROI, targets computed here."""
    gt_array = open_ds(str(container / "labels"))
    roi = gt_array.roi
    raw = _padded(open_ds(str(container / "raw")), roi, CONTEXT) / 255.0
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(raw).float()[None, None])[0].double()
    gt, mask = _padded(gt_array, roi, 1), _padded(open_ds(str(container / "mask")), roi, 1)
    centre = (slice(1, -1),) * 3
    if task_type == "binary":
        target, weight = (gt[centre] > 0)[None], mask[centre][None]
    else:
        target, weight = [], []
        for offset in NEIGHBORHOOD:
            shifted = tuple(slice(1 + o, gt.shape[i] - 1 + o) for i, o in enumerate(offset))
            target.append((gt[centre] == gt[shifted]) & (gt[centre] != 0))
            weight.append(mask[centre] * mask[shifted])
        target, weight = np.stack(target), np.stack(weight)
    target, weight = torch.from_numpy(target.astype(np.float64)), torch.from_numpy(weight)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    loss = float((weight * bce).sum() / weight.sum())
    considered = weight > 0
    predicted, actual = (torch.sigmoid(logits) > 0.5)[considered], (target > 0.5)[considered]
    if task_type == "affinities":
        return {
            "validation_loss": loss,
            "validation_affinity_accuracy": float((predicted == actual).double().mean()),
        }
    tp = int((predicted & actual).sum())
    wrong = int((predicted != actual).sum())
    return {
        "validation_loss": loss,
        "validation_dice": 2 * tp / (2 * tp + wrong),
        "validation_accuracy": 1 - wrong / int(considered.sum()),
    }


@pytest.mark.parametrize(
    "task",
    [
        {"type": "affinities", "balance_weights": False},
        {"type": "binary", "balance_weights": False},
    ],
)
def test_blockwise_scores_equal_one_whole_volume_computation(
    volume, validation_volume, task, tmp_path
):
    raw = _raw(volume, validation_volume, task, validation={"mode": "blockwise"})
    run = TrainingRun(parse_config(raw), tmp_path / "run", "cpu")
    run.prepare(resume=False)
    scores = run.trainer.validator.evaluate(run.model)
    expected = _whole_volume_scores(run.model, validation_volume, task["type"])
    assert set(scores) == set(expected)
    assert 0.05 < expected["validation_loss"] < 10
    for key, value in expected.items():
        # A voxel whose prediction sits on 0.5 may flip between block and whole passes.
        assert scores[key] == pytest.approx(value, rel=1e-5, abs=1e-4), key


def _rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_metrics_are_logged_and_best_checkpoint_follows_the_chosen_metric(
    volume, validation_volume, tmp_path
):
    task = {"type": "affinities", "balance_weights": False}
    validation = {"mode": "blockwise", "metric": "affinity_accuracy"}
    raw = _raw(
        volume, validation_volume, task, validation=validation, max_steps=5, learning_rate=0.01
    )
    result = train(parse_config(raw), tmp_path / "run", device="cpu", progress=False)
    rows = [r for r in _rows(tmp_path / "run") if "validation_loss" in r]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5]
    accuracies = [r["validation_affinity_accuracy"] for r in rows]
    assert len(set(accuracies)) > 1  # otherwise the best is not a choice
    best = torch.load(result.best_checkpoint, weights_only=False)
    # Larger is better for accuracy; ties keep the first.
    assert best["best_metric"] == "validation_affinity_accuracy"
    assert best["iteration"] == rows[int(np.argmax(accuracies))]["iteration"]
    assert best["validation"]["validation_affinity_accuracy"] == max(accuracies)


def test_a_metric_the_task_does_not_compute_is_a_config_error(volume, validation_volume, tmp_path):
    raw = _raw(volume, validation_volume, {"type": "affinities"}, validation={"metric": "dice"})
    run = TrainingRun(parse_config(raw), tmp_path / "run", "cpu")
    with pytest.raises(ConfigError, match="trainer.validation.metric: 'dice'.*affinity_accuracy"):
        run.prepare(resume=False)


@pytest.mark.parametrize("segment", [{}, {"fragments": "mutex"}], ids=["default", "mutex"])
def test_voi_validation_scores_the_segmented_whole_volume_at_its_best_threshold(
    segment, volume, validation_volume, tmp_path
):
    from voltrain.evaluate import evaluate_segmentation
    from voltrain.segment import segment_array
    from voltrain.segment.config import SegmentConfig

    validation = {"mode": "blockwise", "metric": "voi", "thresholds": [0.2, 0.5, 0.8]}
    raw = _raw(volume, validation_volume, {"type": "affinities"}, validation=validation)
    raw["segment"] = {**raw.get("segment", {}), **segment}  # the experiment's segment section
    run = TrainingRun(parse_config(raw), tmp_path / "run", "cpu")
    run.prepare(resume=False)
    scores = run.trainer.validator.evaluate(run.model)

    gt_array = open_ds(str(validation_volume / "labels"))
    raw_data = _padded(open_ds(str(validation_volume / "raw")), gt_array.roi, CONTEXT) / 255.0
    with torch.no_grad():
        logits = run.model.eval()(torch.from_numpy(raw_data).float()[None, None])[0]
    affinities = torch.sigmoid(logits).numpy()
    mask = open_ds(str(validation_volume / "mask"))[gt_array.roi]
    settings = SegmentConfig(**{**raw["segment"], "block_shape": None})
    segmentations = segment_array(
        affinities, NEIGHBORHOOD, [0.2, 0.5, 0.8], mask, settings, gt_array.voxel_size
    )
    expected = {
        t: evaluate_segmentation(s, gt_array[gt_array.roi], mask) for t, s in segmentations.items()
    }
    best = min(expected, key=lambda t: expected[t]["voi"])
    assert scores["validation_threshold"] == best
    for name in ("voi", "voi_split", "voi_merge", "arand"):
        assert scores[f"validation_{name}"] == pytest.approx(expected[best][name], abs=1e-6)


def test_best_checkpoint_follows_the_lowest_voi(volume, validation_volume, tmp_path):
    validation = {"mode": "blockwise", "metric": "voi", "thresholds": [0.3, 0.7]}
    task = {"type": "affinities"}
    raw = _raw(
        volume, validation_volume, task, validation=validation, max_steps=3, learning_rate=0.01
    )
    result = train(parse_config(raw), tmp_path / "run", device="cpu", progress=False)
    rows = [r for r in _rows(tmp_path / "run") if "validation_voi" in r]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert all(r["validation_threshold"] in (0.3, 0.7) for r in rows)
    vois = [r["validation_voi"] for r in rows]
    best = torch.load(result.best_checkpoint, weights_only=False)
    assert best["best_metric"] == "validation_voi"
    assert best["validation"]["validation_voi"] == min(vois)  # lower VOI is better


def test_voi_needs_blockwise_validation(volume, validation_volume, tmp_path):
    raw = _raw(volume, validation_volume, {"type": "affinities"}, validation={"metric": "voi"})
    run = TrainingRun(parse_config(raw), tmp_path / "run", "cpu")
    with pytest.raises(ConfigError, match="trainer.validation.metric: 'voi'"):
        run.prepare(resume=False)
