"""The training graph: min_masked after augmentation, reproducible samples, world offsets."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import experiment_dict
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds

from voltrain.errors import SamplingError
from voltrain.experiment import parse_config
from voltrain.loader import make_loader
from voltrain.models.unet import build_model

ELASTIC = {
    "type": "elastic",
    "control_point_spacing": [40, 40, 40],
    "jitter_sigma": [8, 8, 8],
    "rotate": True,
}


def _trainer(container, **trainer):
    config = parse_config(experiment_dict(container, **trainer))
    task = config.task
    model = build_model(config.model, 1, task.build().num_channels)
    runtime = config.trainer.build()
    runtime.build_batch_provider(config.data.train, model, task)
    return runtime


def test_every_sample_meets_min_masked_behind_elastic(sparse_volume):
    # 10%-covered mask, min_masked 0.5, elastic + rotation: stock RandomLocation loops
    # forever here; every voltrain sample must reach 0.5 on its augmented output region.
    trainer = _trainer(sparse_volume, min_masked=0.5, augments=[ELASTIC])
    pipeline = trainer.pipeline
    for seed in range(12):
        sample = pipeline.request_sample(seed)
        assert sample["mask"].shape == (20, 20, 20)
        assert sample["mask"].mean() >= 0.5


def test_without_mask_samples_stay_inside_the_labels(volume):
    raw = experiment_dict(volume, min_masked=1.0, augments=[ELASTIC])
    raw["data"]["train"][0]["mask"] = None
    config = parse_config(raw)
    model = build_model(config.model, 1, 3)
    trainer = config.trainer.build()
    trainer.build_batch_provider(config.data.train, model, config.task)
    for seed in range(6):
        assert trainer.pipeline.request_sample(seed)["mask"].min() == 1


def test_unreachable_min_masked_errors_before_training(sparse_volume):
    with pytest.raises(SamplingError, match=r"dataset 'cells'.*min_masked=0.99.*best fraction"):
        _trainer(sparse_volume, min_masked=0.99)


def test_same_seed_same_batches_for_any_worker_count(volume):
    trainer = _trainer(volume, augments=[ELASTIC])
    in_process = iter(make_loader(trainer.pipeline, 7, 2, 3, num_workers=0))
    two_workers = iter(make_loader(trainer.pipeline, 7, 2, 3, num_workers=2, timeout=120))
    for _ in range(2):
        a, b = next(in_process), next(two_workers)
        for key in ("raw", "gt", "mask", "target", "weight", "output_offset"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    other_seed = next(iter(make_loader(trainer.pipeline, 8, 2, 3, num_workers=0)))
    assert not np.array_equal(other_seed["raw"].numpy(), a["raw"].numpy())
    two_workers._shutdown_workers()


def test_unaugmented_samples_sit_at_their_world_offset(volume):
    trainer = _trainer(volume)
    raw = open_ds(str(volume / "raw"))
    labels = open_ds(str(volume / "labels"))
    for seed in range(3):
        sample = trainer.pipeline.request_sample(seed)
        out_roi = Roi(Coordinate(sample["output_offset"]), Coordinate(20, 20, 20) * 8)
        np.testing.assert_array_equal(sample["gt"], labels[out_roi])
        raw_roi = Roi(Coordinate(sample["raw_offset"]), Coordinate(36, 36, 36) * 8)
        inside = raw_roi.intersect(raw.roi)
        expected = raw[inside].astype(np.float32) / 255
        start = (inside.begin - raw_roi.begin) / 8
        got = sample["raw"][0][
            tuple(slice(s, s + n) for s, n in zip(start, expected.shape, strict=True))
        ]
        np.testing.assert_allclose(got, expected, atol=1e-6)
