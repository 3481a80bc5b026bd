"""A package installed with pip brings its own model and task through entry points, and
``voltrain train`` and ``voltrain predict`` run with them like with the built-ins."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds

from tests.helpers import experiment_dict
from tests.helpers.plugin_package import PACKAGE, install_plugin, write_plugin_project
from voltrain.cli import main
from voltrain.io.write import level_path
from voltrain.models import MODELS
from voltrain.tasks import TASKS

VOXEL = 8
CONTEXT = 3  # voxels per side: three valid 3^3 convolutions
INPUT_ROI = Roi((16, 32, 48), (512, 512, 512))  # the conftest volume


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The plugin, installed by pip into a directory of its own (not the shared venv)."""
    root = tmp_path_factory.mktemp("plugin")
    return install_plugin(write_plugin_project(root / "src"), root / "site")


def run_voltrain(site: Path, *args: str) -> subprocess.CompletedProcess:
    paths = [str(site), os.environ.get("PYTHONPATH", ""), str(Path(__file__).parent.parent)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return subprocess.run(
        [sys.executable, "-m", "voltrain", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def plugin_config(volume: Path) -> dict:
    config = experiment_dict(volume, input_shape=[22, 22, 22], max_steps=3, batch_size=1)
    config["model"] = {"type": "tiny_conv", "num_fmaps": 3}
    config["task"] = {"type": "focal_binary", "gamma": 1.5}
    return config


def whole_volume_pass(network: torch.nn.Module, raw_path: Path) -> np.ndarray:
    """The network over the whole input at once, zeros outside it, as predict normalises."""
    raw = open_ds(str(raw_path))
    data = np.pad(raw[raw.roi] / 255.0, CONTEXT).astype(np.float32)
    with torch.no_grad():
        return torch.sigmoid(network(torch.from_numpy(data)[None, None]))[0].numpy()


def test_plugin_model_and_task_train_and_predict(plugin_site, volume, tmp_path, monkeypatch):
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(plugin_config(volume)))
    run_dir = tmp_path / "run"

    trained = run_voltrain(plugin_site, "train", str(config_path), "--out", str(run_dir))
    assert trained.returncode == 0, trained.stderr
    written = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert written["model"] == {"type": "tiny_conv", "num_fmaps": 3, "num_convs": 3}
    assert written["task"]["type"] == "focal_binary" and written["task"]["gamma"] == 1.5
    checkpoint = run_dir / "checkpoints" / "iteration_00000003.pt"
    assert checkpoint.is_file()

    output = tmp_path / "out.zarr" / "pred"
    args = ["--checkpoint", str(checkpoint), "--input", str(volume / "raw")]
    # a stack of convolutions outputs any block shape: the plugin states no shape rules
    args += ["--output", str(output), "--block-shape", "32", "32", "32", "--no-progress"]
    predicted = run_voltrain(plugin_site, "predict", str(config_path), *args)
    assert predicted.returncode == 0, predicted.stderr

    prediction = open_ds(level_path(output))
    assert prediction.roi == INPUT_ROI and prediction.voxel_size == Coordinate((VOXEL,) * 3)
    assert prediction.shape[0] == 1, "one channel, as the binary task asks"
    # the same weights in the plugin's own network, over the whole volume in one pass
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.delitem(sys.modules, f"{PACKAGE}.models", raising=False)
    network = importlib.import_module(f"{PACKAGE}.models").TinyConvConfig(num_fmaps=3).build(1, 1)
    network.load_state_dict(torch.load(checkpoint, weights_only=False)["model"])
    expected = whole_volume_pass(network.eval(), volume / "raw")
    assert expected.std() > 1e-4, "the comparison below means something"
    np.testing.assert_allclose(prediction[:], expected, rtol=0, atol=1e-5)


def test_an_unknown_model_type_lists_the_installed_plugin_and_exits_2(
    plugin_site, volume, tmp_path, monkeypatch, capsys
):
    config = plugin_config(volume)
    config["model"]["type"] = "tiny_convv"
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(config))
    monkeypatch.syspath_prepend(str(plugin_site))

    with MODELS.isolated(), TASKS.isolated():
        MODELS.entry_points_loaded = TASKS.entry_points_loaded = False
        code = main(["train", str(config_path), "--out", str(tmp_path / "r")])

    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "model: unknown type 'tiny_convv' (known types: 'tiny_conv', 'unet')" in lines[0]
    assert not (tmp_path / "r").exists()
