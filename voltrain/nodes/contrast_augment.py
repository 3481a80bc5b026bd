"""Random contrast and gamma of raw, each section its own (or the sample as one)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import gunpowder as gp
import numpy as np

from voltrain.errors import ConfigError
from voltrain.nodes.raw_section_augment import (
    SPATIAL_DIMS,
    RawSectionAugment,
    SampleGeometry,
    check_range,
    leading_dims,
    section_index,
)

ContrastCentre = Literal["section", "sample"]
CONTRAST_CENTRES: tuple[str, ...] = ("section", "sample")


@dataclass(frozen=True)
class ContrastParams:
    """The random draw of one ``ContrastAugment`` application.

    ``sections`` lists the changed sections, or is None when the sample changes as a
    whole; entry ``i`` of ``factors`` and ``gammas`` belongs to section ``sections[i]``
    (or is the one entry of a whole-sample change).
    """

    apply: bool
    sections: tuple[int, ...] | None
    factors: tuple[float, ...]
    gammas: tuple[float, ...]


class ContrastAugment(RawSectionAugment):
    """Change raw's contrast and gamma: ``c + factor * (raw ** gamma - c)``.

    Serial sections differ in contrast and brightness curve from one to the next (section
    thickness, staining, detector drift). Per section, each chosen section gets its own
    ``factor`` (uniform in ``[factor_min, factor_max]``) and ``gamma`` (log-uniform in
    ``[gamma_min, gamma_max]``, so brightening and darkening are equally likely);
    otherwise the sample gets one of each.

    The power comes first and is sign-preserving (``sign(raw) * |raw| ** gamma``, as in
    ``GammaAugment``), so it maps [0, 1] onto itself keeping 0 and 1. The factor then
    stretches values around the centre ``c``: with ``centre="section"`` the mean of each
    section after its gamma (a section's mean brightness is kept and its standard
    deviation is multiplied by ``factor``); with ``"sample"`` the mean of the sample's raw
    before this augment (every section is pulled towards or pushed from one level).
    ``clip`` then keeps raw in [0, 1]. Only raw changes.

    Args:
        raw_key: the float raw array (values ~[0, 1]).
        factor_min: smallest contrast factor (>= 0; 0 flattens a section to its centre).
        factor_max: largest contrast factor.
        gamma_min: smallest gamma (> 0).
        gamma_max: largest gamma.
        centre: ``"section"`` or ``"sample"``: the mean the factor stretches around.
        clip: clip the result to [0, 1].
        axis: the axis sections are orthogonal to (0 = z).
        per_section: draw a factor and gamma for each section (else one for the sample).
        section_probability: with ``per_section``, probability of changing each section.
        p: probability of applying the augment to a sample.
    """

    rng_stream = "contrast:scale"

    def __init__(
        self,
        raw_key: gp.ArrayKey,
        factor_min: float = 0.8,
        factor_max: float = 1.2,
        gamma_min: float = 0.8,
        gamma_max: float = 1.25,
        centre: ContrastCentre = "section",
        clip: bool = True,
        axis: int = 0,
        per_section: bool = True,
        section_probability: float = 1.0,
        p: float = 1.0,
    ):
        check_range(factor_min, factor_max, "factor_min", "factor_max", 0.0)
        if gamma_min <= 0.0:
            raise ConfigError(f"gamma_min must be > 0, got {gamma_min}")
        check_range(gamma_min, gamma_max, "gamma_min", "gamma_max", 0.0)
        if centre not in CONTRAST_CENTRES:
            raise ConfigError(
                f"centre must be one of {', '.join(CONTRAST_CENTRES)}, got '{centre}'"
            )
        if factor_min == factor_max == 1.0 and gamma_min == gamma_max == 1.0 and not clip:
            warnings.warn("ContrastAugment with factor 1 and gamma 1 does nothing", stacklevel=2)
        super().__init__(raw_key, axis, per_section, section_probability, p)
        self.factor_min = factor_min
        self.factor_max = factor_max
        self.gamma_min = gamma_min
        self.gamma_max = gamma_max
        self.centre = centre
        self.clip = clip

    def make_params(self, rng: np.random.Generator, geometry: SampleGeometry) -> ContrastParams:
        """Draw whether to apply, the sections, and each one's factor and gamma."""
        apply = bool(rng.random() < self.p)
        sections = self.draw_sections(rng, geometry) if self.per_section else None
        count = 1 if sections is None else len(sections)
        factors = rng.uniform(self.factor_min, self.factor_max, count)
        log_gammas = rng.uniform(math.log(self.gamma_min), math.log(self.gamma_max), count)
        # exp(log(x)) can land a rounding error outside the range; keep the promise
        gammas = np.clip(np.exp(log_gammas), self.gamma_min, self.gamma_max)
        return ContrastParams(apply, sections, tuple(factors.tolist()), tuple(gammas.tolist()))

    def apply_transform(self, data: np.ndarray, params: ContrastParams) -> np.ndarray:
        """Return the changed copy of ``data`` in its dtype (``data`` is not changed)."""
        lead = leading_dims(data)
        spatial = tuple(range(lead, data.ndim))
        sample_mean = data.mean(axis=spatial, keepdims=True) if self.centre == "sample" else None
        if params.sections is None:
            return self._change(data, 0, params, sample_mean, plane_axes=self._plane_axes(data))
        # the sample's mean, shaped like a section's (its extent 1 along the axis dropped)
        centre = None if sample_mean is None else sample_mean[section_index(self.axis, 0)]
        out = data.copy()
        for entry, index in enumerate(params.sections):
            where = section_index(self.axis, index)
            out[where] = self._change(data[where], entry, params, centre, plane_axes=spatial[:-1])
        return out

    def _plane_axes(self, data: np.ndarray) -> tuple[int, ...]:
        """The axes of ``data`` a section spans (its mean is taken over them)."""
        lead = leading_dims(data)
        return tuple(lead + a for a in range(SPATIAL_DIMS) if a != self.axis)

    def _change(
        self,
        data: np.ndarray,
        entry: int,
        params: ContrastParams,
        centre: np.ndarray | None,
        plane_axes: tuple[int, ...],
    ) -> np.ndarray:
        """Apply entry ``entry``'s gamma and factor to ``data`` (a section or the sample);
        ``centre`` None stretches around each section's own mean (over ``plane_axes``)."""
        dtype = data.dtype.type
        out = np.abs(data)
        np.power(out, dtype(params.gammas[entry]), out=out)
        np.copysign(out, data, out=out)
        if centre is None:
            centre = out.mean(axis=plane_axes, keepdims=True, dtype=np.float64).astype(dtype)
        out -= centre
        out *= dtype(params.factors[entry])
        out += centre
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out
