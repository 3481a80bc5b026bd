"""Random linear change of raw intensities: ``raw * scale + shift``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import gunpowder as gp
import numpy as np

from voltrain.errors import ConfigError, DataError
from voltrain.nodes.augment_rng import augment_rng

# this augment's random stream (see voltrain.nodes.augment_rng)
RNG_STREAM = "intensity"


@dataclass(frozen=True)
class IntensityParams:
    """The random draw of one ``IntensityAugment`` application."""

    apply: bool
    scale: float
    shift: float


class IntensityAugment(gp.BatchFilter):
    """Randomly scale and shift the raw intensities: ``raw = raw * scale + shift``.

    ``scale ~ U(scale_min, scale_max)`` and ``shift ~ U(shift_min, shift_max)`` are drawn
    from the request's seed, so the same seed gives the same result. Only raw changes.

    Args:
        raw_key: the float raw array (values ~[0, 1]).
        scale_min: smallest scale factor.
        scale_max: largest scale factor.
        shift_min: smallest additive shift.
        shift_max: largest additive shift.
        clip: clip the result to [0, 1].
        p: probability of applying the augment to a sample.
    """

    def __init__(
        self,
        raw_key: gp.ArrayKey,
        scale_min: float,
        scale_max: float,
        shift_min: float,
        shift_max: float,
        clip: bool = True,
        p: float = 1.0,
    ):
        if scale_min > scale_max:
            raise ConfigError(f"scale_min ({scale_min}) must be <= scale_max ({scale_max})")
        if shift_min > shift_max:
            raise ConfigError(f"shift_min ({shift_min}) must be <= shift_max ({shift_max})")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"p must be in [0, 1], got {p}")
        if scale_min == scale_max == 1.0 and shift_min == shift_max == 0.0 and not clip:
            warnings.warn("IntensityAugment with scale 1 and shift 0 does nothing", stacklevel=2)
        self.raw_key = raw_key
        self.scale_min = scale_min
        self.scale_max = scale_max
        self.shift_min = shift_min
        self.shift_max = shift_max
        self.clip = clip
        self.p = p
        self._params: IntensityParams | None = None

    def setup(self) -> None:
        self.enable_autoskip()
        self.updates(self.raw_key, self.spec[self.raw_key])

    def make_params(self, rng: np.random.Generator) -> IntensityParams:
        """Draw whether to apply the augment, and its scale and shift."""
        apply = bool(rng.random() < self.p)
        scale = float(rng.uniform(self.scale_min, self.scale_max))
        shift = float(rng.uniform(self.shift_min, self.shift_max))
        return IntensityParams(apply=apply, scale=scale, shift=shift)

    def apply_transform(self, data: np.ndarray, params: IntensityParams) -> np.ndarray:
        """Return ``data * scale + shift`` (clipped if asked), in ``data``'s dtype."""
        out = data * data.dtype.type(params.scale)
        out += data.dtype.type(params.shift)
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        self._params = self.make_params(augment_rng(request.random_seed, RNG_STREAM))
        deps = gp.BatchRequest()
        deps[self.raw_key] = request[self.raw_key].copy()
        return deps

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> None:
        assert self._params is not None, "prepare() runs before process()"
        if not self._params.apply:
            return
        raw = batch[self.raw_key]
        if not np.issubdtype(raw.data.dtype, np.floating):
            raise DataError(
                f"IntensityAugment needs float raw data in [0, 1] for {self.raw_key}, got "
                f"{raw.data.dtype}; normalise raw before augmenting intensities"
            )
        raw.data = self.apply_transform(raw.data, self._params)
