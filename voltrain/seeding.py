"""Deterministic seeds for samples: each derives from (seed, iteration, sample index)."""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int) -> int:
    """A 32-bit seed mixing ``parts`` well (different parts give unrelated streams)."""
    return int(np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(1)[0])


def sample_seed(seed: int, iteration: int, sample_index: int, rank: int = 0) -> int:
    """The seed of sample ``sample_index`` of the batch of ``iteration`` on ``rank``."""
    return derive_seed(seed, rank, iteration, sample_index)
