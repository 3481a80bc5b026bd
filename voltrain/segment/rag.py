"""The region adjacency graph: which fragments touch, and the affinities between them.

Every edge carries statistics that add up: for the ``mean`` score the sum and the count
of its affinities; for a ``quantile`` score a histogram of ``HISTOGRAM_BINS`` bins.
Adding is all that merging two edges (or two blocks' parts of one edge) needs, so a block
reports the edges of the affinities it owns, and the driver adds the blocks' tables.

A block owns the affinities at its own voxels. The affinity at voxel ``p`` of offset ``o``
links ``p`` to ``p + o``, which may lie in a neighbouring block; the block reads the
fragments with a context of the largest offset to see it. Each affinity belongs to exactly
one block, so an edge across a block border is counted once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HISTOGRAM_BINS = 64


def stats_width(score: str) -> int:
    """Columns of an edge's statistics: (sum, count) or a histogram."""
    return 2 if score == "mean" else HISTOGRAM_BINS


def scoring_channels(neighborhood: Sequence[Sequence[int]]) -> list[int]:
    """The channels whose affinities score edges: the nearest-neighbour offsets.

    Long-range affinities shape the fragments (the mutex watershed sees them all); edge
    scores use the direct neighbours, as waterz does. A neighbourhood without any direct
    neighbour scores with all its channels.
    """
    direct = [i for i, offset in enumerate(neighborhood) if sum(map(abs, offset)) == 1]
    return direct or list(range(len(neighborhood)))


def neighborhood_context(neighborhood: Sequence[Sequence[int]]) -> tuple[int, int, int]:
    """Voxels of fragment context a block needs on each side, per axis."""
    return tuple(max(abs(offset[axis]) for offset in neighborhood) for axis in range(3))


def block_edges(
    fragments: np.ndarray,
    affinities: np.ndarray,
    neighborhood: Sequence[Sequence[int]],
    context: Sequence[int],
    score: str = "mean",
) -> tuple[np.ndarray, np.ndarray]:
    """The edges of the affinities one block owns.

    Args:
        fragments: fragments of the block grown by ``context`` voxels on each side (0
            where the grown block leaves the volume).
        affinities: (C, z, y, x) affinities of the block itself.
        neighborhood: the offset of each channel.
        context: the growth of ``fragments`` per axis.
        score: ``mean`` or ``quantile`` (decides the statistics kept).

    Returns:
        ``pairs`` (E, 2) uint64 fragment IDs, smaller first, sorted; ``stats`` (E, K).
    """
    shape = affinities.shape[1:]
    centre = fragments[tuple(slice(c, c + s) for c, s in zip(context, shape, strict=True))]
    sources, targets, values = [], [], []
    for channel in scoring_channels(neighborhood):
        offset = neighborhood[channel]
        start = [c + o for c, o in zip(context, offset, strict=True)]
        partner = fragments[tuple(slice(b, b + s) for b, s in zip(start, shape, strict=True))]
        linked = (centre != 0) & (partner != 0) & (centre != partner)
        sources.append(centre[linked])
        targets.append(partner[linked])
        values.append(affinities[channel][linked])
    return _aggregate(
        np.concatenate(sources), np.concatenate(targets), np.concatenate(values), score
    )


def _aggregate(
    a: np.ndarray, b: np.ndarray, values: np.ndarray, score: str
) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1).astype(np.uint64)
    if len(pairs) == 0:
        return pairs.reshape(0, 2), np.zeros((0, stats_width(score)))
    pairs, inverse = np.unique(pairs, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    values = np.clip(values.astype(np.float64), 0.0, 1.0)
    if score == "mean":
        stats = np.stack(
            [
                np.bincount(inverse, weights=values, minlength=len(pairs)),
                np.bincount(inverse, minlength=len(pairs)).astype(np.float64),
            ],
            axis=1,
        )
    else:
        bins = np.minimum((values * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
        flat = np.bincount(inverse * HISTOGRAM_BINS + bins, minlength=len(pairs) * HISTOGRAM_BINS)
        stats = flat.reshape(len(pairs), HISTOGRAM_BINS).astype(np.float64)
    return pairs, stats


def merge_edge_tables(
    tables: Sequence[tuple[np.ndarray, np.ndarray]], width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Add the statistics of edges that several tables (blocks) hold; sorted by pair."""
    tables = [t for t in tables if len(t[0])]
    if not tables:
        return np.zeros((0, 2), np.uint64), np.zeros((0, width))
    pairs = np.concatenate([t[0] for t in tables])
    stats = np.concatenate([t[1] for t in tables])
    pairs, inverse = np.unique(pairs, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    summed = np.zeros((len(pairs), stats.shape[1]))
    np.add.at(summed, inverse, stats)
    return pairs, summed
