"""Resume checks across versions: a key newer than the checkpoint, at its empty default,
is no change; set to something, it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import experiment_dict
from voltrain.errors import ConfigError
from voltrain.experiment import parse_config
from voltrain.run.resume import check_resumable


def _dump(raw: dict) -> dict:
    return parse_config(raw).model_dump(mode="json", by_alias=True)


def test_a_checkpoint_from_before_the_input_section_resumes(volume):
    current = _dump(experiment_dict(volume))
    saved = {key: value for key, value in current.items() if key != "input"}
    saved["trainer"] = dict(saved["trainer"], name="default")  # a key since removed
    check_resumable({"world_size": 1, "config": saved}, Path("old.pt"), current, 1)


def test_an_input_section_that_changes_what_the_network_sees_blocks_resume(volume):
    plain = _dump(experiment_dict(volume))
    saved = {key: value for key, value in plain.items() if key != "input"}
    raw = experiment_dict(volume)
    raw["input"] = {"intensity_maps": [{"scale": 2.0, "shift": -1.0}]}
    with pytest.raises(ConfigError, match="differs from checkpoint 'old.pt' at input;"):
        check_resumable({"world_size": 1, "config": saved}, Path("old.pt"), _dump(raw), 1)
