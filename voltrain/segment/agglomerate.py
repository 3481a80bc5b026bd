"""Hierarchical agglomeration of the fragment graph, over the whole volume at once.

The regions joined by the edge with the lowest score ``1 - affinity score`` merge first;
their edges to a common neighbour become one edge whose statistics are the sum of both
(so its mean is the mean over all the voxel pairs between the two regions), and its score
is computed again. This is waterz's mean-affinity agglomeration, run on the graph of the
whole volume instead of one array in memory. Each threshold ``t`` (ascending) takes a
snapshot once every remaining edge scores ``t`` or more.

Ties break by fragment IDs, so the result does not depend on how the graph was assembled.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

from voltrain.segment.rag import HISTOGRAM_BINS


def edge_score(stats: np.ndarray, score: str, quantile: float) -> float:
    """``1 - affinity score`` of one edge: low scores merge first."""
    if score == "mean":
        return 1.0 - stats[0] / stats[1]
    cumulative = np.cumsum(stats)
    bin_index = int(np.searchsorted(cumulative, quantile * cumulative[-1], side="left"))
    return 1.0 - (min(bin_index, HISTOGRAM_BINS - 1) + 0.5) / HISTOGRAM_BINS


def agglomerate(
    fragment_ids: np.ndarray,
    pairs: np.ndarray,
    stats: np.ndarray,
    thresholds: Sequence[float],
    score: str = "mean",
    quantile: float = 0.5,
) -> dict[float, np.ndarray]:
    """Segment IDs of the sorted ``fragment_ids`` at each threshold.

    Segments are numbered 1, 2, ... in the order of their smallest fragment ID.
    """
    count = len(fragment_ids)
    nodes = np.searchsorted(fragment_ids, pairs).astype(np.int64)
    edges: dict[tuple[int, int], np.ndarray] = {}
    neighbours: list[set[int]] = [set() for _ in range(count)]
    heap: list[tuple[float, int, int]] = []
    for (a, b), row in zip(nodes.tolist(), stats, strict=True):
        edges[(a, b)] = row
        neighbours[a].add(b)
        neighbours[b].add(a)
        heap.append((edge_score(row, score, quantile), a, b))
    heapq.heapify(heap)
    parent = np.arange(count)
    result = {}
    for threshold in sorted(thresholds):
        while heap and heap[0][0] < threshold:
            value, a, b = heapq.heappop(heap)
            row = edges.get((a, b))
            if row is None or edge_score(row, score, quantile) != value:
                continue  # merged away or rescored since it was queued
            _merge(a, b, edges, neighbours, heap, parent, score, quantile)
        result[threshold] = _segment_ids(parent)
    return result


def _merge(a, b, edges, neighbours, heap, parent, score, quantile) -> None:
    """Merge region ``b`` into ``a`` (or the other way, keeping the larger neighbourhood)."""
    del edges[(a, b)]
    keep, gone = (a, b) if len(neighbours[a]) >= len(neighbours[b]) else (b, a)
    neighbours[keep].discard(gone)
    neighbours[gone].discard(keep)
    for other in neighbours[gone]:
        row = edges.pop(_key(gone, other))
        neighbours[other].discard(gone)
        key = _key(keep, other)
        if key in edges:
            row = edges[key] + row
        edges[key] = row
        neighbours[keep].add(other)
        neighbours[other].add(keep)
        heapq.heappush(heap, (edge_score(row, score, quantile), *key))
    neighbours[gone] = set()
    parent[gone] = keep


def _key(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def _segment_ids(parent: np.ndarray) -> np.ndarray:
    roots = parent.copy()
    while True:  # path halving over the whole array until every entry is a root
        grand = roots[roots]
        if np.array_equal(grand, roots):
            break
        roots = grand
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.uint64)
    rank[np.argsort(first, kind="stable")] = np.arange(1, len(first) + 1, dtype=np.uint64)
    return rank[inverse.reshape(-1)]


def relabel(fragments: np.ndarray, fragment_ids: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """The segmentation of a fragments array, given the sorted lookup table; 0 stays 0."""
    result = np.zeros(fragments.shape, dtype=np.uint64)
    labelled = fragments != 0
    if len(fragment_ids):
        index = np.searchsorted(fragment_ids, fragments[labelled])
        result[labelled] = segment_ids[np.minimum(index, len(fragment_ids) - 1)]
    return result
