"""The training graph: min_masked after augmentation, reproducible samples, world offsets."""

from __future__ import annotations

import dataclasses

import gunpowder as gp
import numpy as np
import pytest
import torch
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds

from tests.helpers import experiment_dict
from voltrain.augments import parse_augment
from voltrain.errors import ConfigError, SamplingError
from voltrain.experiment import parse_config
from voltrain.kernels.torch_deform import deform_raw
from voltrain.loader import make_loader
from voltrain.models.unet import build_model
from voltrain.nodes.masked_random_location import MaskedRandomLocation
from voltrain.nodes.zarr_source import ZarrSource
from voltrain.pipeline import (
    PipelineKeys,
    augment_nodes,
    open_training_volumes,
)
from voltrain.profiling import PROFILE_ENV, STAGES

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


REFERENCE_AUGMENTS = [
    {"type": "elastic", "control_point_spacing": [80] * 3, "jitter_sigma": [16] * 3},
    {"type": "simple"},
    {"type": "intensity", "scale_min": 0.9, "scale_max": 1.1, "shift_min": -0.1, "shift_max": 0.1},
    {"type": "noise", "mode": "gaussian", "var": 0.01},
]


def _node_types(augments, fuse=True):
    configs = [parse_augment(a) for a in augments]
    return [type(node).__name__ for node in augment_nodes(configs, PipelineKeys(), fuse)]


def test_elastic_and_the_augments_after_it_run_as_one_fused_pass():
    gamma = {"type": "gamma"}
    assert _node_types([*REFERENCE_AUGMENTS, gamma]) == ["FusedAugment", "GammaAugment"]
    assert _node_types([*REFERENCE_AUGMENTS, gamma], fuse=False) == [
        "Normalize",
        "ElasticAugment",
        "MirrorTransposeAugment",
        "IntensityAugment",
        "NoiseAugment",
        "GammaAugment",
    ]
    # out of the fusable order, each augment still runs, on normalised raw
    assert _node_types([REFERENCE_AUGMENTS[1], REFERENCE_AUGMENTS[0]]) == [
        "Normalize",
        "MirrorTransposeAugment",
        "FusedAugment",
    ]
    assert _node_types([]) == ["Normalize"]


def test_fused_samples_meet_min_masked_and_keep_label_ids(sparse_volume):
    trainer = _trainer(sparse_volume, min_masked=0.5, augments=REFERENCE_AUGMENTS)
    labels = open_ds(str(sparse_volume / "labels"))
    ids = set(np.unique(labels[labels.roi]).tolist()) | {0}
    for seed in range(8):
        sample = trainer.pipeline.request_sample(seed)
        assert sample["mask"].mean() >= 0.5
        assert set(np.unique(sample["gt"]).tolist()) <= ids
        assert sample["raw"].dtype == np.float32 and sample["raw"].shape == (1, 36, 36, 36)
        assert 0.0 <= sample["raw"].min() and sample["raw"].max() <= 1.0


def test_chunk_cache_and_fusion_do_not_change_what_is_read(volume):
    trainer = _trainer(volume, augments=REFERENCE_AUGMENTS[:1])
    cached = trainer.pipeline
    uncached = dataclasses.replace(cached, chunk_cache_mb=0)
    for seed in range(3):
        a, b = cached.request_sample(seed), uncached.request_sample(seed)
        for key in ("raw", "gt", "mask", "target"):
            np.testing.assert_array_equal(a[key], b[key])
    assert cached._chunk_cache.hits > 0


def test_profiling_adds_the_time_of_each_stage(volume, monkeypatch):
    trainer = _trainer(volume, augments=REFERENCE_AUGMENTS)
    monkeypatch.setenv(PROFILE_ENV, "0")
    assert "stage_ms" not in trainer.pipeline.request_sample(0)
    monkeypatch.setenv(PROFILE_ENV, "1")
    sample = trainer.pipeline.request_sample(0)
    stage_ms = dict(zip(STAGES, sample["stage_ms"], strict=True))
    assert stage_ms["read"] > 0 and stage_ms["deform"] > 0 and stage_ms["target"] > 0
    assert sum(stage_ms.values()) == pytest.approx(1000 * sample["sample_seconds"], rel=0.01)


class _RecordRequests(gp.BatchFilter):
    """Records the ROIs its downstream asks for."""

    def __init__(self, key):
        self.key = key
        self.rois = []

    def prepare(self, request):
        self.rois.append(request[self.key].roi)

    def process(self, batch, request):
        pass


def test_the_location_node_reads_only_the_shifted_sample(volume):
    trainer = _trainer(volume)
    volumes = open_training_volumes(trainer.pipeline.datasets, Coordinate(20, 20, 20))
    keys = PipelineKeys()
    recorder = _RecordRequests(keys.raw)
    source = ZarrSource(keys.raw, volumes[0].raw) + recorder
    source += MaskedRandomLocation(keys.raw, trainer.pipeline.sampling_maps[0], keys.location)
    request = gp.BatchRequest(random_seed=3)
    request[keys.raw] = gp.ArraySpec(roi=Roi((-80, -80, -80), (160, 160, 160)))
    request[keys.location] = gp.ArraySpec(nonspatial=True)
    with gp.build(source):
        batch = source.request_batch(request)
    # gunpowder's default would request the union of the box at the origin and the shifted one
    assert recorder.rois[0].shape == Coordinate(160, 160, 160)
    assert batch[keys.raw].spec.roi == request[keys.raw].roi


def test_deform_on_device_hands_over_what_the_device_turns_into_the_same_raw(volume):
    trainer = _trainer(volume, augments=REFERENCE_AUGMENTS)
    on_device = dataclasses.replace(trainer.pipeline, deform_on_device=True)
    for seed in range(2):
        cpu, handed = trainer.pipeline.request_sample(seed), on_device.request_sample(seed)
        assert "raw" not in handed and handed["raw_source"].dtype == np.uint8
        for key in ("gt", "mask", "target", "weight"):
            np.testing.assert_array_equal(handed[key], cpu[key])
        raw = deform_raw(
            torch.from_numpy(handed["raw_source"][None]), torch.from_numpy(handed["raw_map"][None])
        )
        np.testing.assert_allclose(raw[0].numpy(), cpu["raw"], atol=1e-4)


def test_deform_on_device_refuses_augments_it_cannot_run(volume):
    trainer = _trainer(volume, augments=[*REFERENCE_AUGMENTS, {"type": "gamma"}])
    pipeline = dataclasses.replace(trainer.pipeline, deform_on_device=True)
    with pytest.raises(ConfigError, match="deform_on_device"):
        pipeline.build()
