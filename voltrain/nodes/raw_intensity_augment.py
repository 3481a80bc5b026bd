"""The base of augments that change raw's intensities voxel by voxel and nothing else."""

from __future__ import annotations

import gunpowder as gp
import numpy as np

from voltrain.errors import ConfigError, DataError
from voltrain.kernels.augment_rng import augment_rng


class RawIntensityAugment(gp.BatchFilter):
    """Draw parameters per request, then map raw's values; gt and mask are untouched.

    A subclass sets ``rng_stream`` (its name in ``augment_rng``, shared with the fused
    augment so both paths draw alike) and implements ``make_params(rng)``, returning
    parameters with an ``apply`` field, and ``apply_transform(data, params)``, returning the
    new raw. This class draws the parameters in ``prepare`` from the request's seed and
    applies them in ``process``.

    Args:
        raw_key: the float raw array.
        p: probability of applying the augment to a sample.
    """

    rng_stream: str = ""
    # dtypes raw must have; None accepts any floating dtype
    float_dtypes: tuple[type, ...] | None = None

    def __init__(self, raw_key: gp.ArrayKey, p: float = 1.0):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"p must be in [0, 1], got {p}")
        self.raw_key = raw_key
        self.p = p
        self._params = None

    def make_params(self, rng: np.random.Generator):
        raise NotImplementedError

    def apply_transform(self, data: np.ndarray, params) -> np.ndarray:
        raise NotImplementedError

    def setup(self) -> None:
        self.enable_autoskip()
        self.updates(self.raw_key, self.spec[self.raw_key])

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        self._params = self.make_params(augment_rng(request.random_seed, self.rng_stream))
        deps = gp.BatchRequest()
        deps[self.raw_key] = request[self.raw_key].copy()
        return deps

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> None:
        assert self._params is not None, "prepare() runs before process()"
        if not self._params.apply:
            return
        raw = batch[self.raw_key]
        dtype = raw.data.dtype
        accepted = (
            dtype in self.float_dtypes
            if self.float_dtypes is not None
            else np.issubdtype(dtype, np.floating)
        )
        if not accepted:
            raise DataError(
                f"{type(self).__name__} needs float raw data for {self.raw_key}, got {dtype}; "
                "normalise raw before augmenting intensities"
            )
        raw.data = self.apply_transform(raw.data, self._params)
