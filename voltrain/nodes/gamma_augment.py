"""Random gamma correction of raw intensities: ``raw = raw ** gamma``."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import gunpowder as gp
import numpy as np

from voltrain.errors import ConfigError
from voltrain.nodes.raw_intensity_augment import RawIntensityAugment


@dataclass(frozen=True)
class GammaParams:
    """The random draw of one ``GammaAugment`` application."""

    apply: bool
    gamma: float


class GammaAugment(RawIntensityAugment):
    """Randomly gamma-correct the raw intensities: ``raw = raw ** gamma``.

    ``gamma`` is drawn log-uniformly from ``[gamma_min, gamma_max]`` (``log(gamma)`` is
    uniform), so that brightening and darkening by the same factor are equally likely:
    with ``[0.5, 2]``, ``gamma < 1`` and ``gamma > 1`` each have probability 1/2.

    Raw is expected in [0, 1], where the power keeps 0 and 1 fixed. Negative values (e.g.
    after additive noise or a shift to [-1, 1]) would give NaN under a plain power, so the
    power is sign-preserving: ``sign(raw) * |raw| ** gamma``. Only raw changes.

    Args:
        raw_key: the float raw array (values ~[0, 1]).
        gamma_min: smallest gamma (> 0).
        gamma_max: largest gamma (>= gamma_min).
        p: probability of applying the augment to a sample.
    """

    rng_stream = "gamma"

    def __init__(
        self,
        raw_key: gp.ArrayKey,
        gamma_min: float,
        gamma_max: float,
        p: float = 1.0,
    ):
        if gamma_min <= 0.0:
            raise ConfigError(f"gamma_min must be > 0, got {gamma_min}")
        if gamma_min > gamma_max:
            raise ConfigError(f"gamma_min ({gamma_min}) must be <= gamma_max ({gamma_max})")
        if gamma_min == gamma_max == 1.0:
            warnings.warn("GammaAugment with gamma 1 does nothing", stacklevel=2)
        super().__init__(raw_key, p)
        self.gamma_min = gamma_min
        self.gamma_max = gamma_max

    def make_params(self, rng: np.random.Generator) -> GammaParams:
        """Draw whether to apply the augment, and gamma (log-uniform in its range)."""
        apply = bool(rng.random() < self.p)
        log_gamma = rng.uniform(math.log(self.gamma_min), math.log(self.gamma_max))
        # exp(log(x)) can land a rounding error outside the range; keep the promise
        gamma = min(max(math.exp(log_gamma), self.gamma_min), self.gamma_max)
        return GammaParams(apply=apply, gamma=gamma)

    def apply_transform(self, data: np.ndarray, params: GammaParams) -> np.ndarray:
        """Return ``sign(data) * |data| ** gamma`` in ``data``'s dtype."""
        out = np.abs(data)
        np.power(out, data.dtype.type(params.gamma), out=out)
        np.copysign(out, data, out=out)
        return out
