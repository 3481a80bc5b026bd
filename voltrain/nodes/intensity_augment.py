"""Random linear change of raw intensities: ``raw * scale + shift``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import gunpowder as gp
import numpy as np

from voltrain.errors import ConfigError
from voltrain.nodes.raw_intensity_augment import RawIntensityAugment

# this augment's random stream (see voltrain.kernels.augment_rng)
RNG_STREAM = "intensity"


@dataclass(frozen=True)
class IntensityParams:
    """The random draw of one ``IntensityAugment`` application."""

    apply: bool
    scale: float
    shift: float


class IntensityAugment(RawIntensityAugment):
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

    rng_stream = RNG_STREAM

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
        if scale_min == scale_max == 1.0 and shift_min == shift_max == 0.0 and not clip:
            warnings.warn("IntensityAugment with scale 1 and shift 0 does nothing", stacklevel=2)
        super().__init__(raw_key, p)
        self.scale_min = scale_min
        self.scale_max = scale_max
        self.shift_min = shift_min
        self.shift_max = shift_max
        self.clip = clip

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
