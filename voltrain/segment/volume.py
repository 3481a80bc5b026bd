"""``segment_array``: the segmentation of a volume held in memory.

It runs the very steps of the blockwise ``voltrain segment`` (fragments per block, the
edges each block owns, one agglomeration, relabelling) on numpy arrays, so with the same
block shape the two give identical segmentations.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from voltrain.segment.agglomerate import agglomerate, relabel
from voltrain.segment.blocks import id_offset, iter_blocks, padded_read
from voltrain.segment.config import SegmentConfig, check_thresholds
from voltrain.segment.fragments import block_fragments, fragment_window
from voltrain.segment.rag import block_edges, merge_edge_tables, neighborhood_context, stats_width


def check_affinities(affinities: np.ndarray, neighborhood: Sequence[Sequence[int]], name: str):
    """Raise a ``DataError`` naming ``name`` unless the channels fit the neighbourhood."""
    from voltrain.errors import DataError

    if affinities.ndim != 4:
        raise DataError(f"{name}: expected (channels, z, y, x) affinities, got {affinities.ndim}D")
    if affinities.shape[0] != len(neighborhood):
        raise DataError(
            f"{name}: {affinities.shape[0]} affinity channels, but the neighbourhood "
            f"(task.neighborhood) has {len(neighborhood)} offsets"
        )


def segment_array(
    affinities: np.ndarray,
    neighborhood: Sequence[Sequence[int]],
    thresholds: Sequence[float],
    mask: np.ndarray | None = None,
    config: SegmentConfig | None = None,
    voxel_size: Sequence[float] | None = None,
) -> dict[float, np.ndarray]:
    """Segment (C, z, y, x) affinities in [0, 1]: one uint64 segmentation per threshold.

    Args:
        affinities: one channel per offset of ``neighborhood``.
        neighborhood: (z, y, x) voxel offsets (voltrain's ``task.neighborhood``).
        thresholds: merge thresholds in [0, 1] (higher merges more).
        mask: voxels outside it (0) become background.
        config: fragment and scoring settings; its ``thresholds`` are ignored. Default:
            ``SegmentConfig()`` with the whole volume as one block.
        voxel_size: (z, y, x) world units per voxel, for the watershed's distances
            (default: isotropic).
    """
    from voltrain.errors import ConfigError

    try:
        thresholds = check_thresholds(thresholds)
    except ValueError as error:
        raise ConfigError(f"thresholds: {error}") from None
    check_affinities(affinities, neighborhood, "affinities")
    config = config or SegmentConfig(block_shape=None)
    shape = affinities.shape[1:]
    block_shape = tuple(config.block_shape or shape)
    fragments = np.zeros(shape, dtype=np.uint64)
    for block in iter_blocks(shape, block_shape):
        low, high = fragment_window(block.begin, block.shape, shape, config, voxel_size)
        window = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
        crop = tuple(
            slice(b - lo, b - lo + s)
            for b, lo, s in zip(block.begin, low, block.shape, strict=True)
        )
        fragments[block.slices] = block_fragments(
            affinities[(slice(None), *window)],
            neighborhood,
            config,
            None if mask is None else mask[window],
            id_offset(block.index, block_shape),
            voxel_size,
            crop,
        )
    context = neighborhood_context(neighborhood)
    tables = []
    for block in iter_blocks(shape, block_shape):
        grown = padded_read(
            fragments,
            [b - c for b, c in zip(block.begin, context, strict=True)],
            [s + 2 * c for s, c in zip(block.shape, context, strict=True)],
        )
        block_affinities = affinities[(slice(None), *block.slices)]
        tables.append(block_edges(grown, block_affinities, neighborhood, context, config.score))
    pairs, stats = merge_edge_tables(tables, stats_width(config.score))
    fragment_ids = np.unique(fragments)
    fragment_ids = fragment_ids[fragment_ids != 0]
    segments = agglomerate(fragment_ids, pairs, stats, thresholds, config.score, config.quantile)
    return {t: relabel(fragments, fragment_ids, ids) for t, ids in segments.items()}
