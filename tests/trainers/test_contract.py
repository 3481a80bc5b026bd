"""The Trainer contract: what every trainer answers without being probed."""

from __future__ import annotations

import pytest

from tests.helpers import experiment_dict
from voltrain.experiment import parse_config
from voltrain.inference import InputConfig
from voltrain.models.unet import build_model
from voltrain.profiling import PROFILE_ENV


def _config(volume, trainer_type: str):
    raw = experiment_dict(volume)
    if trainer_type == "dummy":
        raw["trainer"] = {"type": "dummy", "input_shape": [36, 36, 36]}
    return parse_config(raw)


def test_gunpowder_trainer_can_train_on_datasets_but_not_on_none(volume):
    config = _config(volume, "gunpowder")
    trainer = config.trainer.build()
    assert trainer.can_train(config.data.train)
    assert not trainer.can_train([])


def test_dummy_trainer_can_train_without_data(volume):
    trainer = _config(volume, "dummy").trainer.build()
    assert trainer.can_train([])


@pytest.mark.parametrize("trainer_type", ["gunpowder", "dummy"])
def test_every_trainer_answers_the_run_s_questions(volume, trainer_type, monkeypatch):
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    config = _config(volume, trainer_type)
    trainer = config.trainer.build()
    assert trainer.can_validate is (trainer_type == "gunpowder")
    assert trainer.voxel_size is None and trainer.stage_profile is None
    assert trainer.input == InputConfig()
    model = build_model(config.model, 1, config.task.build().num_channels)
    trainer.build_batch_provider(config.data.train, model, config.task)
    # The gunpowder trainer knows the data's voxel size once it opened the data.
    expected = (8, 8, 8) if trainer_type == "gunpowder" else None
    assert (None if trainer.voxel_size is None else tuple(trainer.voxel_size)) == expected


def test_a_trainer_that_cannot_validate_says_so(volume):
    trainer = _config(volume, "dummy").trainer.build()
    with pytest.raises(NotImplementedError, match="DummyTrainer does not validate"):
        trainer.build_validation_provider([], None, None, "cpu")
