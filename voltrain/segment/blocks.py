"""The block grid of a segmentation, in voxels, shared by the in-memory and blockwise runs.

Blocks tile the volume from its first voxel; the last block on an axis may be smaller.
A block's index is its position in C order on the grid; its fragment IDs start after
``index * voxels per block``, so IDs are unique and do not depend on which worker ran it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VoxelBlock:
    """One block of the grid: its index, first voxel and shape (z, y, x voxels)."""

    index: int
    begin: tuple[int, int, int]
    shape: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(b, b + s) for b, s in zip(self.begin, self.shape, strict=True))


def grid_counts(volume_shape: Sequence[int], block_shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(-(-v // b) for v, b in zip(volume_shape, block_shape, strict=True))


def id_offset(index: int, block_shape: Sequence[int]) -> int:
    """The first fragment ID of a block is ``id_offset + 1``."""
    return index * int(np.prod(block_shape))


def iter_blocks(volume_shape: Sequence[int], block_shape: Sequence[int]) -> Iterator[VoxelBlock]:
    counts = grid_counts(volume_shape, block_shape)
    for index, position in enumerate(np.ndindex(*counts)):
        begin = tuple(p * b for p, b in zip(position, block_shape, strict=True))
        shape = tuple(
            min(b, v - start) for b, v, start in zip(block_shape, volume_shape, begin, strict=True)
        )
        yield VoxelBlock(index, begin, shape)


def block_index(begin: Sequence[int], volume_shape: Sequence[int], block_shape: Sequence[int]):
    """The index of the block whose first voxel is ``begin``."""
    counts = grid_counts(volume_shape, block_shape)
    position = tuple(b // s for b, s in zip(begin, block_shape, strict=True))
    return int(np.ravel_multi_index(position, counts))


def padded_read(volume: np.ndarray, begin: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """``volume[begin : begin + shape]`` with zeros where the window leaves the volume."""
    result = np.zeros(tuple(shape), dtype=volume.dtype)
    source, target = [], []
    for b, s, v in zip(begin, shape, volume.shape, strict=True):
        lo, hi = max(b, 0), min(b + s, v)
        source.append(slice(lo, max(lo, hi)))
        target.append(slice(lo - b, max(lo, hi) - b))
    result[tuple(target)] = volume[tuple(source)]
    return result
