"""A small third-party package that brings its own model and task through entry points."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = "voltrain_test_plugin"

MODELS_SOURCE = '''
"""A plain stack of valid convolutions: no pooling, so any input of 7+ voxels fits."""

from typing import Literal

import torch
from pydantic import Field

from voltrain.models import ModelConfig


class TinyConvConfig(ModelConfig):
    type: Literal["tiny_conv"] = "tiny_conv"
    num_fmaps: int = Field(4, gt=0)
    num_convs: int = Field(3, gt=0)

    def build(self, in_channels, out_channels):
        layers = []
        for i in range(self.num_convs):
            layers += [torch.nn.Conv3d(in_channels if i == 0 else self.num_fmaps,
                                       self.num_fmaps, 3), torch.nn.ReLU()]
        layers.append(torch.nn.Conv3d(self.num_fmaps, out_channels, 1))
        return torch.nn.Sequential(*layers)
'''

TASKS_SOURCE = '''
"""Binary foreground with a focal loss instead of plain cross-entropy."""

from typing import Literal

import torch
from pydantic import Field

from voltrain.tasks import BinaryTask, BinaryTaskConfig
from voltrain.tasks.base import weighted_mean


class FocalBinaryTaskConfig(BinaryTaskConfig):
    type: Literal["focal_binary"] = "focal_binary"
    gamma: float = Field(2.0, ge=0)

    def build(self):
        return FocalBinaryTask(self)


class FocalBinaryTask(BinaryTask):
    def loss(self, logits, target, weight):
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, reduction="none"
        )
        p = torch.sigmoid(logits)
        p_true = p * target + (1 - p) * (1 - target)
        return weighted_mean((1 - p_true) ** self.config.gamma * bce, weight)
'''

PYPROJECT = f"""
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "voltrain-test-plugin"
version = "0.1"

[project.entry-points."voltrain.models"]
tiny_conv = "{PACKAGE}.models:TinyConvConfig"

[project.entry-points."voltrain.tasks"]
focal_binary = "{PACKAGE}.tasks:FocalBinaryTaskConfig"

[tool.setuptools]
packages = ["{PACKAGE}"]
"""


def write_plugin_project(root: Path) -> Path:
    """The plugin's source tree (package and pyproject with its entry points)."""
    package = root / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(textwrap.dedent(MODELS_SOURCE))
    (package / "tasks.py").write_text(textwrap.dedent(TASKS_SOURCE))
    (root / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    return root


def install_plugin(project: Path, target: Path) -> Path:
    """``pip install`` the project into ``target`` (offline, with the venv's setuptools);
    put ``target`` on PYTHONPATH to use it."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(project),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target
