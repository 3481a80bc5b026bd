"""The loader: what a spawned worker is sent, and that the pipeline file is cleaned up."""

from __future__ import annotations

import dataclasses
import gc
import pickle

import numpy as np

from tests.helpers import experiment_dict
from voltrain.experiment import parse_config
from voltrain.loader import SampleDataset
from voltrain.models.unet import build_model

PIPE_BUFFER = 64 * 1024  # Linux's default pipe capacity


def _pipeline_with_large_sampling_map(container):
    config = parse_config(experiment_dict(container))
    trainer = config.trainer.build()
    model = build_model(config.model, 1, config.task.build().num_channels)
    trainer.build_batch_provider(config.data.train, model, config.task)
    pipeline = trainer.pipeline
    # A sampling map as large as that of a ~400^3 volume: far beyond one pipe buffer.
    big = dataclasses.replace(
        pipeline.sampling_maps[0], valid_boxes=np.arange(200_000, dtype=np.int32)
    )
    return dataclasses.replace(pipeline, sampling_maps=[big])


def test_worker_payload_fits_the_pipe_so_workers_start_in_parallel(volume):
    pipeline = _pipeline_with_large_sampling_map(volume)
    assert len(pickle.dumps(SampleDataset(pipeline, 0, 1))) > PIPE_BUFFER
    shipped = SampleDataset(pipeline, 0, 1, ship_by_file=True)
    payload = pickle.dumps(shipped)
    assert len(payload) < PIPE_BUFFER

    in_worker = pickle.loads(payload)
    assert in_worker.pipeline is None
    loaded = in_worker.pipeline_file.load()
    np.testing.assert_array_equal(
        loaded.sampling_maps[0].valid_boxes, pipeline.sampling_maps[0].valid_boxes
    )
    assert loaded.input_shape == pipeline.input_shape


def test_pipeline_file_is_removed_with_the_loader_dataset(volume):
    pipeline = _pipeline_with_large_sampling_map(volume)
    shipped = SampleDataset(pipeline, 0, 1, ship_by_file=True)
    path = shipped.pipeline_file.path
    assert path.is_file()
    del shipped
    gc.collect()
    assert not path.exists() and not path.parent.exists()
