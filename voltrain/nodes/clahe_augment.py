"""Random local contrast equalisation (CLAHE) of raw, per section or in 3D."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import gunpowder as gp
import numpy as np
from skimage.exposure import equalize_adapthist

from voltrain.errors import ConfigError, DataError
from voltrain.nodes.raw_section_augment import (
    RawSectionAugment,
    SampleGeometry,
    check_range,
    leading_dims,
    section_index,
    world_per_axis,
)


@dataclass(frozen=True)
class ClaheParams:
    """The random draw of one ``ClaheAugment`` application.

    ``sections`` lists the equalised sections, or is None when the sample is equalised in
    3D; entry ``i`` of ``clip_limits`` belongs to section ``sections[i]`` (or is the one
    entry of a 3D equalisation). ``kernel`` is the contextual region in voxels (two values
    per section, three in 3D), or None for scikit-image's default (1/8 of each side).
    """

    apply: bool
    sections: tuple[int, ...] | None
    clip_limits: tuple[float, ...]
    kernel: tuple[int, ...] | None


class ClaheAugment(RawSectionAugment):
    """Equalise raw's local contrast with CLAHE (``skimage.exposure.equalize_adapthist``).

    Contrast-limited adaptive histogram equalisation spreads the grey values of each
    contextual region (``kernel_size``) over the range, limited by ``clip_limit`` (higher
    gives more contrast), so a dull region gains contrast while a crisp one stays about
    as it is. Per section, each chosen section is equalised in its plane with its own
    clip limit (uniform in ``[clip_limit_min, clip_limit_max]``); otherwise the sample is
    equalised in 3D.

    Value range: scikit-image stretches its input's [min, max] to [0, 1] and returns
    [0, 1]; this node maps the result back onto the [min, max] of the section (or sample)
    it equalised, so raw stays in the range it had (within [0, 1] after normalisation)
    and a section's overall brightness does not jump. CLAHE costs about 0.5 s for a 132^3
    float32 sample on one core (every section, or 3D): use a small ``p`` or
    ``section_probability``. Only raw changes.

    Args:
        raw_key: the float raw array (values ~[0, 1]).
        kernel_size: contextual region, world units, one value or one per axis (z, y, x;
            per section the axis's entry is unused); None: 1/8 of each side.
        clip_limit_min: smallest clip limit, in [0, 1] (0: no limit, plain AHE).
        clip_limit_max: largest clip limit, in [0, 1].
        nbins: grey-level bins of the histograms (>= 2).
        axis: the axis sections are orthogonal to (0 = z).
        per_section: equalise each section in 2D (else the sample in 3D).
        section_probability: with ``per_section``, probability of equalising each section.
        p: probability of applying the augment to a sample.
    """

    rng_stream = "contrast:clahe"

    def __init__(
        self,
        raw_key: gp.ArrayKey,
        kernel_size: float | Sequence[float] | None = None,
        clip_limit_min: float = 0.01,
        clip_limit_max: float = 0.03,
        nbins: int = 256,
        axis: int = 0,
        per_section: bool = True,
        section_probability: float = 1.0,
        p: float = 1.0,
    ):
        check_range(clip_limit_min, clip_limit_max, "clip_limit_min", "clip_limit_max", 0.0)
        if clip_limit_max > 1.0:
            raise ConfigError(f"clip_limit_max must be <= 1, got {clip_limit_max}")
        if nbins < 2:
            raise ConfigError(f"nbins must be >= 2, got {nbins}")
        self.kernel_size = (
            None if kernel_size is None else world_per_axis(kernel_size, "kernel_size")
        )
        super().__init__(raw_key, axis, per_section, section_probability, p)
        self.clip_limit_min = clip_limit_min
        self.clip_limit_max = clip_limit_max
        self.nbins = nbins

    def make_params(self, rng: np.random.Generator, geometry: SampleGeometry) -> ClaheParams:
        """Draw whether to apply, the sections and their clip limits; kernel in voxels."""
        apply = bool(rng.random() < self.p)
        sections = self.draw_sections(rng, geometry) if self.per_section else None
        count = 1 if sections is None else len(sections)
        limits = rng.uniform(self.clip_limit_min, self.clip_limit_max, count)
        kernel = None
        if self.kernel_size is not None:
            voxels = [
                max(1, round(k / v))
                for k, v in zip(self.kernel_size, geometry.voxel_size, strict=True)
            ]
            if self.per_section:
                del voxels[self.axis]
            kernel = tuple(voxels)
        return ClaheParams(apply, sections, tuple(limits.tolist()), kernel)

    def apply_transform(self, data: np.ndarray, params: ClaheParams) -> np.ndarray:
        """Return the equalised copy of ``data`` in its dtype (``data`` is not changed)."""
        lead = leading_dims(data)
        if params.sections is None and data.shape[-1] in (3, 4):
            # scikit-image would read a 3D image of 3 or 4 columns as RGB(A)
            raise DataError(
                f"ClaheAugment: {self.raw_key} has {data.shape[-1]} voxels along x, which "
                "scikit-image reads as colour in 3D; use per_section"
            )
        out = data.copy()
        targets = [((Ellipsis,), 0)] if params.sections is None else []
        targets += [(section_index(self.axis, i), e) for e, i in enumerate(params.sections or ())]
        for where, entry in targets:
            for channel in product(*(range(n) for n in data.shape[:lead])):
                image = out[channel][where]
                image[...] = self._equalise(image, params.clip_limits[entry], params.kernel)
        return out

    def _equalise(self, image: np.ndarray, clip_limit: float, kernel) -> np.ndarray:
        """CLAHE of one image (2D or 3D), mapped back onto its own [min, max]."""
        low, high = float(image.min()), float(image.max())
        if not high > low:  # a flat image has no contrast to equalise
            return image
        scaled = (image - low) / (high - low)
        equalised = equalize_adapthist(scaled, kernel, clip_limit, self.nbins)
        return (low + (high - low) * equalised).astype(image.dtype)
