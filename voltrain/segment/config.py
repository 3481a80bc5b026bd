"""The settings of ``voltrain segment``: plain validated data, the ``segment:`` config key."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from voltrain.config import StrictModel


class SegmentConfig(StrictModel):
    """How affinities become a segmentation (the ``segment:`` section of an experiment).

    Fragments come from a watershed per block (seeded, scikit-image, by default; or
    mwatershed's mutex watershed); a fragment graph with the
    mean (or a quantile) affinity of every pair of touching fragments is agglomerated
    hierarchically over the whole volume; each threshold gives one segmentation.

    Attributes:
        thresholds: merge thresholds in [0, 1]: at threshold ``t`` two regions merge while
            ``1 - score`` of their edge is below ``t`` (waterz's convention: higher merges
            more). One segmentation per threshold.
        fragments: ``watershed``: a seeded watershed of the mean nearest-neighbour
            affinity, seeds at the peaks of the distance to boundaries (the field's
            "watershed from affinities"); ``mutex``: mwatershed's mutex watershed.
        boundary: (``watershed``) the boundary map: ``min``, each voxel's weakest
            nearest-neighbour edge (from either end: sees a boundary between touching
            objects), or ``mean``, the mean of its nearest-neighbour channels (lsd's).
        boundary_threshold: (``watershed``) voxels whose boundary map is above it are
            inside objects; their distance to the rest places the seeds.
        seed_radius: (``watershed``) one seed per local maximum of that distance within
            this many voxels of the finest axis (the same world distance on the others);
            higher gives fewer, larger fragments.
        fragments_per_section: (``watershed``) flood every z section on its own, for
            anisotropic stacks (e.g. 40×4×4 nm) with shifted sections.
        fragment_context: (``watershed``) voxels of context (of the finest axis, scaled
            like ``seed_radius``) on every side of a block that the watershed sees, so
            that an object grazing a block is flooded from its own seed.
        background_threshold: (``watershed``) voxels with no affinity above it are
            background (0).
        fragment_bias: (``mutex``) affinities above it attract and below it repel;
            higher gives more, smaller fragments.
        score: the edge score: ``mean`` affinity, or a ``quantile`` of the affinities.
        quantile: the quantile in [0, 1] when ``score: quantile``.
        block_shape: (z, y, x) voxels per block; ``None``: the whole volume is one block.
        min_fragment_size: fragments smaller than this many voxels become background.
    """

    thresholds: list[float] = Field(default_factory=lambda: [0.5], min_length=1)
    fragments: Literal["watershed", "mutex"] = "watershed"
    boundary: Literal["min", "mean"] = "min"
    boundary_threshold: float = Field(0.5, ge=0.0, le=1.0)
    seed_radius: float = Field(5.0, gt=0.0)
    fragments_per_section: bool = False
    fragment_context: int = Field(8, ge=0)
    background_threshold: float = Field(0.01, ge=0.0, le=1.0)
    fragment_bias: float = Field(0.5, ge=0.0, le=1.0)
    score: Literal["mean", "quantile"] = "mean"
    quantile: float = Field(0.5, ge=0.0, le=1.0)
    block_shape: list[int] | None = Field(
        default_factory=lambda: [64, 64, 64], min_length=3, max_length=3
    )
    min_fragment_size: int = Field(0, ge=0)

    @field_validator("thresholds")
    @classmethod
    def _check_thresholds(cls, thresholds: list[float]) -> list[float]:
        return check_thresholds(thresholds)

    @field_validator("block_shape")
    @classmethod
    def _check_block_shape(cls, shape: list[int] | None) -> list[int] | None:
        if shape is not None and any(size <= 0 for size in shape):
            raise ValueError(f"must be positive on every axis, got {shape}")
        return shape


def check_thresholds(thresholds) -> list[float]:
    """Sorted, distinct thresholds; a ``ValueError`` names one outside [0, 1]."""
    values = [float(value) for value in thresholds]
    if not values:
        raise ValueError("at least one threshold is needed")
    for value in values:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"threshold {value} is outside [0, 1]")
    return sorted(set(values))
