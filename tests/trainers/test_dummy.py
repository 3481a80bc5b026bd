"""DummyTrainer: real steps on random data."""

from __future__ import annotations

import torch

from tests.helpers import experiment_dict
from voltrain.experiment import parse_config
from voltrain.models.unet import build_model


def test_dummy_trainer_runs_real_steps(volume):
    raw = experiment_dict(volume)
    raw["trainer"] = {"type": "dummy", "input_shape": [36, 36, 36], "batch_size": 2}
    config = parse_config(raw)
    model = build_model(config.model, 1, config.task.build().num_channels)
    trainer = config.trainer.build()
    trainer.build_batch_provider([], model, config.task)
    optimizer = trainer.create_optimizer(model)
    before = [p.detach().clone() for p in model.parameters()]
    with trainer:
        stats = list(trainer.iterate(3, model, optimizer, torch.device("cpu")))
    assert [s.iteration for s in stats] == [1, 2, 3]
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
