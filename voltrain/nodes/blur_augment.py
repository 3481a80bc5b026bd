"""Random gaussian or motion blur of raw, per section (out-of-focus sections) or in 3D."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import gunpowder as gp
import numpy as np
from scipy import ndimage

from voltrain.errors import ConfigError
from voltrain.nodes.raw_section_augment import (
    RawSectionAugment,
    SampleGeometry,
    check_range,
    leading_dims,
    section_index,
)

BlurMode = Literal["gaussian", "motion"]
BLUR_MODES: tuple[str, ...] = ("gaussian", "motion")


@dataclass(frozen=True)
class BlurParams:
    """The random draw of one ``BlurAugment`` application, in voxels.

    ``sections`` lists the blurred sections, or is None when the sample is blurred as a
    whole. Entry ``i`` of ``sigmas`` (gaussian) or ``lines`` (motion) belongs to section
    ``sections[i]`` (or is the one entry of a whole-sample blur). A sigma has one value per
    spatial axis (0 along the section axis when per section); a line is the in-plane
    displacement (voxels along the plane's first and second axis) from one end of the
    motion to the other.
    """

    apply: bool
    sections: tuple[int, ...] | None
    sigmas: tuple[tuple[float, float, float], ...] = ()
    lines: tuple[tuple[float, float], ...] = ()


class BlurAugment(RawSectionAugment):
    """Blur raw: gaussian (defocus) or motion (a line kernel), per section or in 3D.

    Modes:
        ``"gaussian"``: a gaussian of standard deviation ``sigma`` (world units, drawn
            uniformly from ``[sigma_min, sigma_max]``), in the plane of each chosen section
            or, with ``per_section=False``, in 3D. In world units an anisotropic sample is
            blurred alike in every direction: at (40, 4, 4) nm a sigma of 8 nm is 2 voxels
            in y and x and 0.2 in z.
        ``"motion"``: the average along a line of length ``length`` (world units, drawn
            from ``[length_min, length_max]``) in a direction drawn uniformly in the section
            plane, as when the stage or beam drifts while a section is imaged. Per section,
            each chosen section gets its own length and direction; otherwise all sections
            get the same one.

    Both keep the mean (the kernels sum to 1) and only raw changes. Near raw's faces the
    filters reflect raw (see ``RawSectionAugment``).

    Args:
        raw_key: the float raw array (values ~[0, 1]).
        mode: ``"gaussian"`` or ``"motion"``.
        sigma_min: smallest gaussian sigma, world units (>= 0).
        sigma_max: largest gaussian sigma, world units.
        length_min: shortest motion, world units (>= 0).
        length_max: longest motion, world units.
        axis: the axis sections are orthogonal to (0 = z).
        per_section: blur each section independently (else the sample in 3D).
        section_probability: with ``per_section``, probability of blurring each section.
        p: probability of applying the augment to a sample.
    """

    def __init__(
        self,
        raw_key: gp.ArrayKey,
        mode: BlurMode = "gaussian",
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        length_min: float | None = None,
        length_max: float | None = None,
        axis: int = 0,
        per_section: bool = True,
        section_probability: float = 0.1,
        p: float = 1.0,
    ):
        if mode not in BLUR_MODES:
            raise ConfigError(f"mode must be one of {', '.join(BLUR_MODES)}, got '{mode}'")
        low, high, low_name = (
            (sigma_min, sigma_max, "sigma_min")
            if mode == "gaussian"
            else (length_min, length_max, "length_min")
        )
        high_name = low_name.replace("_min", "_max")
        if low is None or high is None:
            missing = low_name if low is None else high_name
            raise ConfigError(f"{missing} is needed for mode '{mode}' (world units, e.g. nm)")
        check_range(low, high, low_name, high_name, 0.0)
        if high == 0.0:
            warnings.warn(
                f"BlurAugment in mode '{mode}' with {high_name} 0 does nothing", stacklevel=2
            )
        super().__init__(raw_key, axis, per_section, section_probability, p)
        self.mode = mode
        self.low = float(low)
        self.high = float(high)
        # separate streams: a gaussian and a motion blur in one list pick different sections
        self.rng_stream = f"blur:{mode}"

    def make_params(self, rng: np.random.Generator, geometry: SampleGeometry) -> BlurParams:
        """Draw whether to blur, the sections, and each one's sigma or line (in voxels)."""
        apply = bool(rng.random() < self.p)
        sections = self.draw_sections(rng, geometry) if self.per_section else None
        count = 1 if sections is None else len(sections)
        sizes = rng.uniform(self.low, self.high, count)
        if self.mode == "gaussian":
            return BlurParams(
                apply, sections, sigmas=tuple(self._sigma(s, geometry) for s in sizes)
            )
        angles = rng.uniform(0.0, math.pi, count)
        lines = tuple(self._line(s, a, geometry) for s, a in zip(sizes, angles, strict=True))
        return BlurParams(apply, sections, lines=lines)

    def _sigma(self, sigma: float, geometry: SampleGeometry) -> tuple[float, float, float]:
        voxel_sigma = [sigma / v for v in geometry.voxel_size]
        if self.per_section:
            voxel_sigma[self.axis] = 0.0
        return tuple(voxel_sigma)

    def _line(self, length: float, angle: float, geometry: SampleGeometry) -> tuple[float, float]:
        first, second = geometry.plane_voxel_size(self.axis)
        return (length * math.sin(angle) / first, length * math.cos(angle) / second)

    def apply_transform(self, data: np.ndarray, params: BlurParams) -> np.ndarray:
        """Return a blurred copy of ``data`` (``data`` itself is not changed)."""
        lead = leading_dims(data)
        if params.sections is None:
            return self._blur(data, 0, params, lead)
        out = data.copy()
        for entry, index in enumerate(params.sections):
            where = section_index(self.axis, index)
            out[where] = self._blur(data[where], entry, params, lead)
        return out

    def _blur(self, data: np.ndarray, entry: int, params: BlurParams, lead: int) -> np.ndarray:
        """Blur ``data`` (a section or the sample) with entry ``entry`` of ``params``."""
        if self.mode == "gaussian":
            sigma = list(params.sigmas[entry])
            if params.sections is not None:
                del sigma[self.axis]  # a section has no extent along the axis
            return ndimage.gaussian_filter(data, [0.0] * lead + sigma, mode="reflect")
        kernel = line_kernel(*params.lines[entry])
        if params.sections is None:  # the same in-plane kernel in every section
            kernel = np.expand_dims(kernel, self.axis)
        kernel = kernel.reshape((1,) * lead + kernel.shape).astype(data.dtype)
        return ndimage.convolve(data, kernel, mode="reflect")


def line_kernel(first: float, second: float) -> np.ndarray:
    """A 2D kernel averaging along a line of in-plane displacement ``(first, second)``
    voxels, centred, odd-sized and summing to 1.

    Points spaced a quarter voxel apart along the line are spread onto their four nearest
    voxels (bilinear weights), so that any direction and a sub-voxel length give a
    smooth, unbiased line; a zero length leaves the image as it is.
    """
    extent = np.array([first, second], dtype=np.float64)
    radius = np.ceil(np.abs(extent) / 2).astype(int)
    points = int(math.ceil(float(np.abs(extent).max()) * 4)) + 1
    positions = np.linspace(-0.5, 0.5, points)[:, None] * extent + radius
    base = np.floor(positions).astype(int)
    frac = positions - base
    kernel = np.zeros(tuple(2 * radius + 1), dtype=np.float64)
    for da in (0, 1):
        for db in (0, 1):
            weight = (frac[:, 0] if da else 1 - frac[:, 0]) * (frac[:, 1] if db else 1 - frac[:, 1])
            rows = np.minimum(base[:, 0] + da, kernel.shape[0] - 1)
            cols = np.minimum(base[:, 1] + db, kernel.shape[1] - 1)
            np.add.at(kernel, (rows, cols), weight)
    return kernel / kernel.sum()
