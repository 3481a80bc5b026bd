"""The base of augments that filter raw section by section (or in 3D) and nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate

from voltrain.errors import ConfigError
from voltrain.kernels.augment_rng import augment_rng
from voltrain.nodes.raw_intensity_augment import RawIntensityAugment

SPATIAL_DIMS = 3


@dataclass(frozen=True)
class SampleGeometry:
    """The spatial shape (voxels) and voxel size (world units) of one request's raw."""

    shape: Coordinate
    voxel_size: Coordinate

    def plane_voxel_size(self, axis: int) -> tuple[int, int]:
        """The voxel size of the two axes spanning a section orthogonal to ``axis``."""
        return tuple(v for a, v in enumerate(self.voxel_size) if a != axis)


class RawSectionAugment(RawIntensityAugment):
    """Draw parameters per request for raw's sections, then filter raw; gt and mask stay.

    Serial-section EM images each section on its own, so a section can be out of focus,
    low in contrast or partly missing while its neighbours are fine. With ``per_section``
    a subclass changes each section (the planes orthogonal to ``axis``) independently,
    each with probability ``section_probability``; otherwise it filters the sample as one
    3D volume. A subclass implements ``make_params(rng, geometry)``, which sees the
    sample's shape and voxel size (so world units become voxels there, once), and
    ``apply_transform(data, params)``. Spatial axes are raw's last three; leading
    (channel) axes are filtered alike.

    Filters read only the requested raw: near its faces they reflect raw (scipy's
    ``mode="reflect"``) rather than ask upstream for more. The affected band, a few
    sigmas or half a kernel wide, lies in the network's context, outside the output
    region (it reaches output voxels only through the rim of their receptive field);
    asking upstream for more would make the elastic pass resample a larger box for every
    sample; and with ``clip_raw`` the extra raw at a volume's face would be zeros, which
    blur darker than a reflection.

    Args:
        raw_key: the float raw array (values ~[0, 1]).
        axis: the spatial axis sections are orthogonal to (0 = z for serial sections).
        per_section: change sections independently; False filters the sample in 3D.
        section_probability: with ``per_section``, probability of changing each section.
        p: probability of applying the augment to a sample.
    """

    float_dtypes = (np.float32, np.float64)

    def __init__(
        self,
        raw_key: gp.ArrayKey,
        axis: int = 0,
        per_section: bool = True,
        section_probability: float = 1.0,
        p: float = 1.0,
    ):
        if axis not in range(SPATIAL_DIMS):
            raise ConfigError(f"axis must be 0, 1 or 2 (a spatial axis, 0 = z), got {axis}")
        if not 0.0 <= section_probability <= 1.0:
            raise ConfigError(f"section_probability must be in [0, 1], got {section_probability}")
        super().__init__(raw_key, p)
        self.axis = axis
        self.per_section = per_section
        self.section_probability = section_probability

    def make_params(self, rng: np.random.Generator, geometry: SampleGeometry):
        raise NotImplementedError

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        voxel_size = self.spec[self.raw_key].voxel_size
        roi = request[self.raw_key].roi
        geometry = SampleGeometry(roi.shape / voxel_size, voxel_size)
        rng = augment_rng(request.random_seed, self.rng_stream)
        self._params = self.make_params(rng, geometry)
        deps = gp.BatchRequest()
        deps[self.raw_key] = request[self.raw_key].copy()
        return deps

    def draw_sections(self, rng: np.random.Generator, geometry: SampleGeometry) -> tuple[int, ...]:
        """The sections to change: each with ``section_probability`` (one draw a section,
        so a section's fate does not depend on how many sections follow it)."""
        chosen = rng.random(geometry.shape[self.axis]) < self.section_probability
        return tuple(int(i) for i in np.flatnonzero(chosen))


def section_index(axis: int, index: int) -> tuple:
    """Index expression of section ``index`` orthogonal to spatial ``axis`` of an array
    whose last three axes are spatial (leading channel axes are kept)."""
    return (Ellipsis, index) + (slice(None),) * (SPATIAL_DIMS - 1 - axis)


def leading_dims(data: np.ndarray) -> int:
    """How many (channel) axes come before raw's three spatial ones."""
    return data.ndim - SPATIAL_DIMS


def world_per_axis(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    """A world length given once for every axis or once per axis (z, y, x), checked > 0."""
    values = (float(value),) * SPATIAL_DIMS if np.isscalar(value) else tuple(map(float, value))
    if len(values) != SPATIAL_DIMS:
        raise ConfigError(f"{name} must be one value or one per axis (z, y, x), got {value}")
    if min(values) <= 0.0:
        raise ConfigError(f"{name} must be > 0 (world units), got {value}")
    return values


def check_range(low: float, high: float, low_name: str, high_name: str, minimum: float) -> None:
    """``ConfigError`` unless ``minimum <= low <= high`` (messages start with the key)."""
    if low < minimum:
        raise ConfigError(f"{low_name} must be >= {minimum}, got {low}")
    if low > high:
        raise ConfigError(f"{low_name} ({low}) must be <= {high_name} ({high})")
