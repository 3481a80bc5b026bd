"""Random holes in raw (missing parts): boxes or blobs filled with zero, the mean or noise."""

from __future__ import annotations

from collections.abc import Sequence
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
    world_per_axis,
)

HoleShape = Literal["box", "blob"]
HOLE_SHAPES: tuple[str, ...] = ("box", "blob")
HoleFill = Literal["zero", "mean", "noise"]
HOLE_FILLS: tuple[str, ...] = ("zero", "mean", "noise")


@dataclass(frozen=True)
class Hole:
    """One hole, in voxels: in section ``section`` (two values each in the section's
    plane), or with ``section`` None a 3D hole (three values each)."""

    section: int | None
    start: tuple[int, ...]
    size: tuple[int, ...]
    shape_seed: int


@dataclass(frozen=True)
class CutoutParams:
    """The random draw of one ``CutoutAugment`` application; ``noise_seed`` seeds the
    noise of ``fill="noise"``."""

    apply: bool
    holes: tuple[Hole, ...]
    noise_seed: int


class CutoutAugment(RawSectionAugment):
    """Cut holes into raw: the missing parts of damaged sections, or 3D occlusions.

    Per section, each chosen section gets ``count_min`` to ``count_max`` holes in its
    plane; otherwise the sample gets that many 3D holes. A hole's extent along each axis
    is drawn uniformly from ``[size_min, size_max]`` (world units, one value or one per
    axis z, y, x; a section's hole is one section thick), and it lies inside the sample.
    ``shape="box"`` fills the whole box; ``"blob"`` an irregular blob inscribed in it (an
    ellipsoid with a smoothly jittered outline).

    Fills: ``"zero"``; ``"mean"``, the mean of the section (per section) or the sample;
    ``"noise"``, gaussian noise of that mean and standard deviation, clipped to its
    [min, max], so a hole keeps the grey-value statistics but no structure.

    Only raw changes: gt and mask are kept, so the network learns to infer the labels
    under a hole from its surroundings, as it must where a real section is damaged.

    Args:
        raw_key: the float raw array (values ~[0, 1]).
        size_min: smallest hole extent, world units (one value or one per axis).
        size_max: largest hole extent, world units (one value or one per axis).
        count_min: fewest holes per section (per sample in 3D), >= 0.
        count_max: most holes per section (per sample in 3D).
        shape: ``"box"`` or ``"blob"``.
        fill: ``"zero"``, ``"mean"`` or ``"noise"``.
        axis: the axis sections are orthogonal to (0 = z).
        per_section: cut holes into sections (else 3D holes into the sample).
        section_probability: with ``per_section``, probability of cutting each section.
        p: probability of applying the augment to a sample.
    """

    rng_stream = "cutout"

    def __init__(
        self,
        raw_key: gp.ArrayKey,
        size_min: float | Sequence[float],
        size_max: float | Sequence[float],
        count_min: int = 1,
        count_max: int = 3,
        shape: HoleShape = "box",
        fill: HoleFill = "zero",
        axis: int = 0,
        per_section: bool = True,
        section_probability: float = 0.1,
        p: float = 1.0,
    ):
        self.size_min = world_per_axis(size_min, "size_min")
        self.size_max = world_per_axis(size_max, "size_max")
        if any(low > high for low, high in zip(self.size_min, self.size_max, strict=True)):
            raise ConfigError(f"size_min ({size_min}) must be <= size_max ({size_max}) per axis")
        check_range(count_min, count_max, "count_min", "count_max", 0)
        if shape not in HOLE_SHAPES:
            raise ConfigError(f"shape must be one of {', '.join(HOLE_SHAPES)}, got '{shape}'")
        if fill not in HOLE_FILLS:
            raise ConfigError(f"fill must be one of {', '.join(HOLE_FILLS)}, got '{fill}'")
        super().__init__(raw_key, axis, per_section, section_probability, p)
        self.count_min = count_min
        self.count_max = count_max
        self.shape = shape
        self.fill = fill

    def make_params(self, rng: np.random.Generator, geometry: SampleGeometry) -> CutoutParams:
        """Draw whether to apply, the sections, and each hole's place, size and shape."""
        apply = bool(rng.random() < self.p)
        axes = [a for a in range(3) if a != self.axis] if self.per_section else [0, 1, 2]
        sections = self.draw_sections(rng, geometry) if self.per_section else (None,)
        holes = []
        for section in sections:
            for _ in range(rng.integers(self.count_min, self.count_max, endpoint=True)):
                holes.append(self._hole(rng, geometry, axes, section))
        return CutoutParams(apply, tuple(holes), int(rng.integers(2**63)))

    def _hole(self, rng, geometry: SampleGeometry, axes: list[int], section: int | None) -> Hole:
        """One hole spanning ``axes`` (voxels), drawn inside the sample."""
        shape = [geometry.shape[a] for a in axes]
        world = rng.uniform([self.size_min[a] for a in axes], [self.size_max[a] for a in axes])
        size = [
            int(min(max(1, round(w / geometry.voxel_size[a])), n))
            for w, a, n in zip(world, axes, shape, strict=True)
        ]
        start = [
            int(rng.integers(0, n - s, endpoint=True)) for n, s in zip(shape, size, strict=True)
        ]
        return Hole(section, tuple(start), tuple(size), int(rng.integers(2**63)))

    def apply_transform(self, data: np.ndarray, params: CutoutParams) -> np.ndarray:
        """Return a copy of ``data`` with the holes filled (``data`` is not changed)."""
        lead = leading_dims(data)
        noise = np.random.default_rng(params.noise_seed)
        out = data.copy()
        for hole in params.holes:
            where = (Ellipsis,) if hole.section is None else section_index(self.axis, hole.section)
            reference = data[where]
            box = tuple(slice(s, s + n) for s, n in zip(hole.start, hole.size, strict=True))
            region = out[where][(Ellipsis, *box)]
            inside = hole_mask(hole, self.shape)
            region[..., inside] = self._values(reference, lead, int(inside.sum()), noise)
        return out

    def _values(self, reference: np.ndarray, lead: int, count: int, noise) -> np.ndarray:
        """The fill of ``count`` voxels of each channel, from ``reference``'s statistics."""
        if self.fill == "zero":
            return np.zeros(reference.shape[:lead] + (1,), dtype=reference.dtype)
        spatial = tuple(range(lead, reference.ndim))
        mean = reference.mean(axis=spatial, dtype=np.float64)[..., None]
        if self.fill == "mean":
            return mean.astype(reference.dtype)
        std = reference.std(axis=spatial, dtype=np.float64)[..., None]
        values = noise.normal(mean, std, reference.shape[:lead] + (count,))
        low, high = reference.min(axis=spatial)[..., None], reference.max(axis=spatial)[..., None]
        return np.clip(values, low, high).astype(reference.dtype)


def hole_mask(hole: Hole, shape: HoleShape) -> np.ndarray:
    """The voxels of ``hole``'s box that it covers: all for a box; for a blob, those of
    an ellipsoid inscribed in the box whose outline is jittered by smooth noise."""
    if shape == "box":
        return np.ones(hole.size, dtype=bool)
    # normalised distance from the box centre: 1 on the inscribed ellipsoid
    grids = np.meshgrid(*((np.arange(n) + 0.5) / n * 2 - 1 for n in hole.size), indexing="ij")
    distance = sum(g**2 for g in grids)
    field = np.random.default_rng(hole.shape_seed).standard_normal(hole.size)
    field = ndimage.gaussian_filter(field, [n / 8 for n in hole.size])
    # zero mean: the noise bends the outline rather than growing or shrinking the blob
    field -= field.mean()
    field /= max(float(field.std()), 1e-12)
    inside = distance + 0.4 * field < 0.8
    inside[tuple(n // 2 for n in hole.size)] = True  # never an empty hole
    return inside
