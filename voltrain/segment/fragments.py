"""Fragments: an over-segmentation of one block of affinities.

Two methods, chosen by ``segment.fragments``:

- ``watershed`` (default), the field's "watershed from affinities": the weakest (or the
  mean) nearest-neighbour affinity of each voxel is a boundary map (``boundary``); voxels
  above ``boundary_threshold`` are
  the inside of objects; the distance of each of them to the nearest boundary (in world
  units, so anisotropic voxels are measured right) peaks at object centres; one seed per
  peak (local maxima within ``seed_radius``); scikit-image's watershed floods
  ``1 - boundary map`` from the seeds, on the block grown by ``fragment_context``.
  Fragments are cut where only edges at or below ``background_threshold`` join them, and
  voxels with no edge above it are background. A noisy boundary voxel can only let a
  fragment leak if it also moves a distance peak, so fragments stop at boundaries.
- ``mutex``: mwatershed's mutex watershed on the affinities minus ``fragment_bias``; edges
  above the bias attract, edges below repel. One weak boundary edge merges two objects.

Fragment IDs are made unique over the whole volume by adding the block's ID offset
(``block_index * voxels per block``), so that blocks written by different workers, in any
order, never share an ID.
"""

from __future__ import annotations

from collections.abc import Sequence

import fastremap
import mwatershed
import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from voltrain.segment.config import SegmentConfig


def block_fragments(
    affinities: np.ndarray,
    neighborhood: Sequence[Sequence[int]],
    settings: SegmentConfig,
    mask: np.ndarray | None = None,
    id_offset: int = 0,
    voxel_size: Sequence[float] | None = None,
    crop: tuple[slice, slice, slice] | None = None,
) -> np.ndarray:
    """Fragments (uint64, 0 = background) of one block's (C, z, y, x) affinities.

    ``settings`` chooses the method and its parameters; ``voxel_size`` (z, y, x) scales the
    watershed's distances (default: isotropic). ``crop``: the block within ``affinities``
    when they were read with context (``fragment_window``); the fragments are the block's.
    Local IDs are consecutive from 1 and then shifted by ``id_offset``.
    """
    if settings.fragments == "mutex":
        if crop is not None:
            affinities = affinities[(slice(None), *crop)]
            mask = None if mask is None else mask[crop]
            crop = None
        weights = affinities.astype(np.float64) - settings.fragment_bias
        offsets = [list(map(int, o)) for o in neighborhood]
        fragments = np.asarray(mwatershed.agglom(weights, offsets), dtype=np.uint64)
    else:
        boundary = boundary_map(affinities, neighborhood, settings.boundary)
        spacing = tuple(float(v) for v in (voxel_size or (1.0, 1.0, 1.0)))
        flooded = seeded_watershed(boundary, settings, mask, spacing)
        # As waterz does, voxels with no edge above a low level are background; a higher
        # level would make one background segment of every object's boundary voxels.
        fragments = split_at_weak_edges(
            flooded, affinities, neighborhood, settings.background_threshold
        )
    if crop is not None:
        fragments = np.ascontiguousarray(fragments[crop])
        mask = None if mask is None else mask[crop]
    if mask is not None:
        fragments[mask == 0] = 0
    if settings.min_fragment_size > 1:
        ids, counts = np.unique(fragments, return_counts=True)
        small = ids[(counts < settings.min_fragment_size) & (ids != 0)]
        if small.size:
            fragments[np.isin(fragments, small)] = 0
    fragments, _ = fastremap.renumber(fragments, preserve_zero=True, in_place=True)
    fragments = fragments.astype(np.uint64, copy=False)
    if id_offset:
        fragments[fragments != 0] += np.uint64(id_offset)
    return fragments


def boundary_map(
    affinities: np.ndarray, neighborhood: Sequence[Sequence[int]], kind: str
) -> np.ndarray:
    """Per voxel, how surely it is inside an object: ``min``, the weakest nearest-neighbour
    edge that touches it (from either end), or ``mean``, the mean of its own
    nearest-neighbour channels (all channels if no offset is one voxel long)."""
    nearest = [i for i, offset in enumerate(neighborhood) if sum(map(abs, offset)) == 1]
    nearest = nearest or list(range(len(neighborhood)))
    if kind == "mean":
        return affinities[nearest].astype(np.float32).mean(axis=0)
    return incident_edges(affinities[nearest], [neighborhood[i] for i in nearest], np.minimum)


def incident_edges(
    affinities: np.ndarray, neighborhood: Sequence[Sequence[int]], reduce: np.ufunc
) -> np.ndarray:
    """Per voxel, ``reduce`` (``np.minimum``, ``np.maximum``) of the affinities of every
    edge that touches it: its own channels and its partners' channels that point to it."""
    result = reduce.reduce(affinities, axis=0).astype(np.float32)
    for channel, offset in enumerate(neighborhood):
        # Channel c at p links p and p + offset; the partner sees it from the other end.
        pairs = list(zip(offset, result.shape, strict=True))
        partner = tuple(slice(max(0, o), s + min(0, o)) for o, s in pairs)
        source = tuple(slice(max(0, -o), s - max(0, o)) for o, s in pairs)
        view = result[partner]
        reduce(view, affinities[channel][source], out=view)
    return result


def split_at_weak_edges(
    fragments: np.ndarray,
    affinities: np.ndarray,
    neighborhood: Sequence[Sequence[int]],
    threshold: float,
) -> np.ndarray:
    """Each fragment split into its parts connected by nearest-neighbour edges above
    ``threshold``; voxels with no such edge become background.

    A voxel watershed does not know on which side of a voxel a boundary edge lies, so on
    hard boundaries (affinity 0) between thin objects it floods across them; with a low
    ``threshold`` (``background_threshold``) only such certain boundaries are cut.
    """
    index = np.arange(fragments.size).reshape(fragments.shape)
    linked = np.zeros(fragments.shape, dtype=bool)
    starts, ends = [], []
    for channel, offset in enumerate(neighborhood):
        if sum(map(abs, offset)) != 1:
            continue
        pairs = list(zip(offset, fragments.shape, strict=True))
        partner = tuple(slice(max(0, o), s + min(0, o)) for o, s in pairs)
        source = tuple(slice(max(0, -o), s - max(0, o)) for o, s in pairs)
        strong = affinities[channel][source] > threshold
        linked[source] |= strong
        linked[partner] |= strong
        keep = strong & (fragments[source] != 0) & (fragments[source] == fragments[partner])
        starts.append(index[source][keep])
        ends.append(index[partner][keep])
    starts, ends = np.concatenate(starts), np.concatenate(ends)
    graph = coo_matrix((np.ones(starts.size, np.int8), (starts, ends)), shape=(fragments.size,) * 2)
    _, parts = connected_components(graph, directed=False)
    parts = parts.reshape(fragments.shape).astype(np.uint64) + np.uint64(1)
    parts[~linked | (fragments == 0)] = 0
    return parts


def seeded_watershed(
    boundary: np.ndarray,
    settings: SegmentConfig,
    mask: np.ndarray | None,
    voxel_size: tuple[float, float, float],
) -> np.ndarray:
    """Watershed of ``1 - boundary`` from the peaks of the distance to the boundaries.

    With ``settings.fragments_per_section`` every z section is flooded on its own (for
    anisotropic stacks whose sections may be shifted against each other).
    """
    if not settings.fragments_per_section:
        return _flood(boundary, settings, mask, voxel_size)
    fragments = np.zeros(boundary.shape, dtype=np.uint64)
    next_id = np.uint64(0)
    for z in range(boundary.shape[0]):
        section_mask = None if mask is None else mask[z : z + 1]
        section = _flood(boundary[z : z + 1], settings, section_mask, voxel_size)
        section[section != 0] += next_id
        fragments[z : z + 1] = section
        next_id = max(next_id, section.max())
    return fragments


def _flood(
    boundary: np.ndarray,
    settings: SegmentConfig,
    mask: np.ndarray | None,
    voxel_size: tuple[float, float, float],
) -> np.ndarray:
    inside = boundary > settings.boundary_threshold
    if mask is not None:
        inside &= mask != 0
    distance = ndimage.distance_transform_edt(inside, sampling=voxel_size)
    seeds = _seeds(distance, settings.seed_radius, voxel_size)
    if seeds.max() == 0:
        # No voxel clears the threshold: the block is one fragment, which agglomeration
        # keeps or merges like any other, rather than a hole in the segmentation.
        seeds[np.unravel_index(np.argmax(boundary), boundary.shape)] = 1
    flood_mask = None if mask is None else mask != 0
    fragments = watershed(1.0 - boundary, markers=seeds, mask=flood_mask)
    return fragments.astype(np.uint64, copy=False)


def scaled_radius(radius: float, voxel_size: Sequence[float]) -> tuple[int, ...]:
    """``radius`` voxels of the finest axis as voxels of every axis (at least one)."""
    finest = min(voxel_size)
    return tuple(max(1, round(radius * finest / v)) for v in voxel_size)


def fragment_window(
    begin: Sequence[int],
    shape: Sequence[int],
    volume_shape: Sequence[int],
    settings: SegmentConfig,
    voxel_size: Sequence[float] | None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (begin, end) voxels a block's fragments are computed on: the block grown by
    ``settings.fragment_context`` (scaled like ``seed_radius``), inside the volume.

    With context, an object that only grazes a block is flooded from its own seed outside
    the block rather than taken by a neighbour's; the same window in the in-memory and
    the blockwise run gives the same fragments.
    """
    if settings.fragments == "mutex" or settings.fragment_context == 0:
        context = (0, 0, 0)
    else:
        context = scaled_radius(settings.fragment_context, voxel_size or (1, 1, 1))
    low = tuple(max(0, b - c) for b, c in zip(begin, context, strict=True))
    high = tuple(
        min(v, b + s + c) for b, s, c, v in zip(begin, shape, context, volume_shape, strict=True)
    )
    return low, high


def _seeds(
    distance: np.ndarray, seed_radius: float, voxel_size: tuple[float, float, float]
) -> np.ndarray:
    """One label per group of local maxima of ``distance``; every connected part of the
    objects' inside gets at least one, so a small object beside a large one keeps its own."""
    # The window spans ``seed_radius`` voxels of the finest axis, the same world distance
    # on coarser axes (at least one voxel either side, never across a lone section).
    radius = scaled_radius(seed_radius, voxel_size)
    size = [
        1 if extent == 1 else 2 * r + 1 for r, extent in zip(radius, distance.shape, strict=True)
    ]
    inside, _ = ndimage.label(distance > 0)
    peaks = np.zeros(distance.shape, dtype=bool)
    coordinates = peak_local_max(
        distance, footprint=np.ones(size, dtype=bool), labels=inside, exclude_border=False
    )
    peaks[tuple(coordinates.T)] = True
    seeds, _ = ndimage.label(peaks)
    return seeds
