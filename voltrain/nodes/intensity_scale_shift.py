"""Fixed linear map of raw intensities, e.g. from [0, 1] to [-1, 1]."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import gunpowder as gp
import numpy as np

from voltrain.nodes.raw_intensity_augment import RawIntensityAugment


@dataclass(frozen=True)
class IntensityScaleShiftParams:
    """The random draw of one ``IntensityScaleShift`` application (only whether it applies)."""

    apply: bool


class IntensityScaleShift(RawIntensityAugment):
    """Map raw intensities deterministically: ``raw = raw * scale + shift``.

    With ``scale=2, shift=-1`` raw in [0, 1] becomes [-1, 1]. Nothing is clipped. Only raw
    changes. With ``p < 1`` the map is applied to a random fraction ``p`` of the samples
    (drawn from the request's seed); the default ``p=1`` applies it to every sample.

    Args:
        raw_key: the float raw array.
        scale: the factor raw is multiplied with.
        shift: the value added after scaling.
        p: probability of applying the map to a sample.
    """

    rng_stream = "intensity_scale_shift"

    def __init__(self, raw_key: gp.ArrayKey, scale: float, shift: float, p: float = 1.0):
        if scale == 1.0 and shift == 0.0:
            warnings.warn("IntensityScaleShift with scale 1 and shift 0 does nothing", stacklevel=2)
        super().__init__(raw_key, p)
        self.scale = scale
        self.shift = shift

    def make_params(self, rng: np.random.Generator) -> IntensityScaleShiftParams:
        """Draw whether to apply the map (always when ``p == 1``)."""
        return IntensityScaleShiftParams(apply=bool(rng.random() < self.p))

    def apply_transform(self, data: np.ndarray, params: IntensityScaleShiftParams) -> np.ndarray:
        """Return ``data * scale + shift`` in ``data``'s dtype."""
        out = data * data.dtype.type(self.scale)
        out += data.dtype.type(self.shift)
        return out
