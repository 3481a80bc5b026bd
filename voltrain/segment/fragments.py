"""Fragments: an over-segmentation of one block of affinities by mutex watershed.

mwatershed's mutex watershed takes the affinities minus ``fragment_bias``: edges above the
bias attract, edges below repel, and the strongest decide first. Voxels with no attractive
edge stay 0 (background). Fragment IDs are made unique over the whole volume by adding the
block's ID offset (``block_index * voxels per block``), so that blocks written by different
workers, in any order, never share an ID.
"""

from __future__ import annotations

from collections.abc import Sequence

import fastremap
import mwatershed
import numpy as np


def block_fragments(
    affinities: np.ndarray,
    neighborhood: Sequence[Sequence[int]],
    fragment_bias: float,
    mask: np.ndarray | None = None,
    min_fragment_size: int = 0,
    id_offset: int = 0,
) -> np.ndarray:
    """Fragments (uint64, 0 = background) of one block's (C, z, y, x) affinities.

    Local IDs are consecutive from 1 and then shifted by ``id_offset``.
    """
    weights = affinities.astype(np.float64) - fragment_bias
    fragments = mwatershed.agglom(weights, [list(map(int, o)) for o in neighborhood])
    fragments = np.asarray(fragments, dtype=np.uint64)
    if mask is not None:
        fragments[mask == 0] = 0
    if min_fragment_size > 1:
        ids, counts = np.unique(fragments, return_counts=True)
        small = ids[(counts < min_fragment_size) & (ids != 0)]
        if small.size:
            fragments[np.isin(fragments, small)] = 0
    fragments, _ = fastremap.renumber(fragments, preserve_zero=True, in_place=True)
    fragments = fragments.astype(np.uint64, copy=False)
    if id_offset:
        fragments[fragments != 0] += np.uint64(id_offset)
    return fragments
