"""A bounded in-process cache of decoded zarr chunks, least recently used out first.

Decompressing chunks is most of the cost of a read: a rotated 132^3 raw sample reads a
~200^3 box, some 40-60 chunks of 64^3. Training draws sample after sample from the same
region (the gt ROI plus context), so the same chunks are decoded again and again. A loader
worker keeps them decoded here, up to ``max_bytes``; a volume larger than that still works,
with fewer hits.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np


class ChunkCache:
    """Decoded chunks of zarr arrays, up to ``max_bytes`` in all (one per loader worker).

    Args:
        max_bytes: the most bytes of decoded chunks held at once.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._chunks: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __getstate__(self):
        # a copy sent to a loader worker starts empty
        state = self.__dict__.copy()
        state.update(_chunks=OrderedDict(), bytes=0, hits=0, misses=0)
        return state

    def read(self, name: Hashable, array, box: tuple[slice, ...], out: np.ndarray) -> None:
        """Copy ``array[box]`` (a zarr array, ``box`` inside it) into ``out``.

        Chunks not in the cache are decoded once and kept. ``name`` identifies the array
        among those that share this cache.
        """
        chunk_shape = tuple(array.chunks)
        first = tuple(s.start // c for s, c in zip(box, chunk_shape, strict=True))
        last = tuple((s.stop - 1) // c for s, c in zip(box, chunk_shape, strict=True))
        ranges = (range(f, e + 1) for f, e in zip(first, last, strict=True))
        indices = list(itertools.product(*ranges))
        missing = [index for index in indices if (name, index) not in self._chunks]
        self.hits += len(indices) - len(missing)
        self.misses += len(missing)
        fresh = self._decode(array, chunk_shape, missing)
        for index in indices:
            chunk = fresh.get(index)
            if chunk is None:
                chunk = self._chunks[(name, index)]
                self._chunks.move_to_end((name, index))
            _copy_overlap(chunk, index, chunk_shape, out, box)
        for index, chunk in fresh.items():
            self._insert((name, index), chunk)

    def _decode(self, array, chunk_shape, missing: list[tuple[int, ...]]) -> dict:
        """Decode ``missing`` chunks: in one read of their bounding box when they fill
        most of it (zarr decodes a box's chunks concurrently), otherwise one by one."""
        if not missing:
            return {}
        low = np.min(missing, axis=0)
        high = np.max(missing, axis=0) + 1
        if len(missing) * 2 >= np.prod(high - low):
            box = tuple(
                slice(int(lo) * c, min(int(hi) * c, n))
                for lo, hi, c, n in zip(low, high, chunk_shape, array.shape, strict=True)
            )
            data = np.asarray(array[box])
            return {
                index: np.ascontiguousarray(data[_chunk_slices(index, chunk_shape, box)])
                for index in missing
            }
        chunks = {}
        for index in missing:
            box = tuple(
                slice(i * c, min((i + 1) * c, n))
                for i, c, n in zip(index, chunk_shape, array.shape, strict=True)
            )
            chunks[index] = np.asarray(array[box])
        return chunks

    def _insert(self, key: Hashable, chunk: np.ndarray) -> None:
        if chunk.nbytes > self.max_bytes:
            return
        self._chunks[key] = chunk
        self.bytes += chunk.nbytes
        while self.bytes > self.max_bytes:
            _, evicted = self._chunks.popitem(last=False)
            self.bytes -= evicted.nbytes


def _chunk_slices(index, chunk_shape, box: tuple[slice, ...]) -> tuple[slice, ...]:
    """Where chunk ``index`` lies inside the array read for ``box`` (chunk-aligned)."""
    return tuple(
        slice(i * c - s.start, min((i + 1) * c, s.stop) - s.start)
        for i, c, s in zip(index, chunk_shape, box, strict=True)
    )


def _copy_overlap(chunk: np.ndarray, index, chunk_shape, out: np.ndarray, box) -> None:
    """Copy the part of ``chunk`` (at chunk ``index``) that lies in ``box`` into ``out``."""
    src, dst = [], []
    for i, c, s, n in zip(index, chunk_shape, box, chunk.shape, strict=True):
        begin = max(i * c, s.start)
        end = min(i * c + n, s.stop)
        src.append(slice(begin - i * c, end - i * c))
        dst.append(slice(begin - s.start, end - s.start))
    out[tuple(dst)] = chunk[tuple(src)]
