"""Shared fixtures: tiny zarr volumes on disk and experiment configs that use them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from voltrain.synthetic import make_synthetic_volume

# Two cores on CI: keep torch from oversubscribing them.
torch.set_num_threads(int(os.environ.get("VOLTRAIN_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def volume(tmp_path_factory) -> Path:
    """A 64^3 synthetic volume at 8 nm with an offset, 60% masked (zarr v3)."""
    container = tmp_path_factory.mktemp("data") / "cells.zarr"
    make_synthetic_volume(
        container,
        shape=(64, 64, 64),
        voxel_size=(8, 8, 8),
        offset=(16, 32, 48),
        num_cells=20,
        mask_fraction=0.6,
        chunk_shape=(32, 32, 32),
        seed=1,
    )
    return container


@pytest.fixture(scope="session")
def sparse_volume(tmp_path_factory) -> Path:
    """A 64^3 synthetic volume whose mask covers only 10% (zarr v2)."""
    container = tmp_path_factory.mktemp("sparse") / "sparse.zarr"
    make_synthetic_volume(
        container,
        shape=(64, 64, 64),
        voxel_size=(8, 8, 8),
        num_cells=20,
        mask_fraction=0.1,
        chunk_shape=(32, 32, 32),
        seed=2,
        zarr_format=2,
    )
    return container


@pytest.fixture
def write_config(tmp_path):
    """Write an experiment dict as YAML and return its path."""

    def write(config: dict, name: str = "experiment.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write
