"""Checkpoint files: pruning spares best.pt, every RNG round-trips, loading is safe and
strict."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from voltrain.errors import CheckpointError
from voltrain.run.checkpoint import (
    BEST_NAME,
    atomic_save,
    capture_rng_state,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)


def test_prune_keeps_the_newest_and_never_the_best(tmp_path):
    for iteration in (1, 2, 3, 4):
        save_checkpoint(tmp_path, iteration, {"model": {}, "iteration": iteration})
    atomic_save(tmp_path / BEST_NAME, {"model": {}, "iteration": 1})
    removed = prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in removed] == ["iteration_00000001.pt", "iteration_00000002.pt"]
    assert [i for i, _ in list_checkpoints(tmp_path)] == [3, 4]
    assert (tmp_path / BEST_NAME).exists()
    assert prune_checkpoints(tmp_path, keep=0) == []


def test_every_rng_round_trips_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    save_checkpoint(tmp_path, 1, {"model": {}, "iteration": 1, "rng": state})
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "iteration_00000001.pt")["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "iteration": 0, "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match="unreadable: it holds objects other than") as error:
        load_checkpoint(path)
    assert len(str(error.value).splitlines()) == 1


class _Payload:
    """Any pickled object outside tensors and plain data."""
