"""Every example config in configs/ loads, and its U-Net accepts its own input shape (at
full size, on the meta device); ``test_config_runs`` trains each one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from voltrain.experiment import load_config
from voltrain.models.unet import build_model

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_configs_directory_has_examples():
    assert {path.name for path in CONFIGS} >= {"demo.yaml", "em_anisotropic.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_example_config_model_accepts_its_input_shape(path: Path):
    config = load_config(path)
    task = config.task.build()
    shape = tuple(config.trainer.input_shape)
    # The meta device runs the real forward pass (every crop and concatenation) without
    # allocating: the EM U-Net at full size would not fit a test machine.
    with torch.device("meta"):
        model = build_model(config.model, 1, task.num_channels)
        output = model(torch.empty(1, 1, *shape))
    assert tuple(output.shape[2:]) == tuple(model.output_shape(shape))
    assert output.shape[1] == task.num_channels
    assert all(size > 0 for size in output.shape[2:])
