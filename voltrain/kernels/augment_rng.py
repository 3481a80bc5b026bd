"""The random generator an augment node draws one request's parameters from."""

from __future__ import annotations

import zlib

import numpy as np


def augment_rng(seed: int, stream: str) -> np.random.Generator:
    """A generator for ``seed`` (the request's) and ``stream`` (the augment's name).

    The fused augment draws the parameters of several augments from one request seed:
    seeded with the bare seed, they would all get the same numbers (the elastic augment's
    "apply?" draw would be the intensity augment's, mirroring one axis would be tied to a
    scale above 1). A stream name per augment keeps their parameters independent, and each
    separate node uses the same stream, so both paths draw alike from a given seed.
    """
    return np.random.default_rng([int(seed) % 2**63, zlib.crc32(stream.encode())])
