"""Where training samples may be centred so that enough of their output is masked.

A ``SamplingMap`` is computed once per dataset, before training, from the mask (or, with no
mask, from the gt ROI). The mask is averaged over blocks of ``block_shape`` voxels, read slab
by slab, and an integral image over the block means gives the masked fraction of every
block-aligned output box. Its memory is one float32 per block (1/64 to 1/512 of a uint8
mask), not the 8 bytes per voxel of gunpowder's integral image.

The map is an estimate on the block grid: the exact fraction of each sample is checked again
after augmentation by ``MinMaskedReject``. It serves three purposes:

- fail fast, before training, when no location can reach ``min_masked``;
- draw locations without reading data that will be rejected;
- name the best fraction reachable in that error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from funlib.geometry import Coordinate, Roi

from voltrain.data import TrainingVolume
from voltrain.errors import SamplingError

# Blocks per output box along each axis; more blocks make the estimate finer.
BLOCKS_PER_OUTPUT = 8


@dataclass
class SamplingMap:
    """Block-aligned output boxes of one dataset whose masked fraction reaches min_masked.

    Attributes:
        roi: the world ROI the block grid covers (the gt ROI).
        block_size: world size of one block.
        box_blocks: blocks per axis of an output box.
        box_grid_shape: how many box positions there are along each axis.
        valid_boxes: flat int32 indices (into ``box_grid_shape``) of the valid boxes; a box's
            index is that of its first block.
        best_fraction: the highest masked fraction over all boxes.
        coverage: the fraction of the gt ROI that is masked.
    """

    roi: Roi
    block_size: Coordinate
    box_blocks: Coordinate
    box_grid_shape: tuple[int, ...]
    valid_boxes: np.ndarray
    best_fraction: float
    coverage: float

    def draw_center(self, rng: np.random.Generator, voxel_size: Coordinate) -> Coordinate:
        """Draw a world-unit output centre, uniform over the valid boxes and within a block."""
        flat = self.valid_boxes[rng.integers(len(self.valid_boxes))]
        box = np.unravel_index(int(flat), self.box_grid_shape)
        box_begin = self.roi.offset + Coordinate(int(b) for b in box) * self.block_size
        box_center = box_begin + self.block_size * self.box_blocks / 2
        jitter = Coordinate(
            int(rng.integers(-(n // 2), n - n // 2)) for n in self.block_size / voxel_size
        )
        return (box_center / voxel_size + jitter) * voxel_size


def block_shape_for(output_shape: Coordinate) -> Coordinate:
    """Voxels per block along each axis, so that an output box spans ~8 blocks."""
    return Coordinate(max(1, s // BLOCKS_PER_OUTPUT) for s in output_shape)


def compute_sampling_map(
    volume: TrainingVolume, output_size: Coordinate, min_masked: float
) -> SamplingMap:
    """Compute where output boxes of ``output_size`` (world) reach ``min_masked``.

    Raises ``SamplingError`` naming the dataset, its mask coverage and the best fraction
    reachable when no box does.
    """
    voxel_size = volume.voxel_size
    block_shape = block_shape_for(output_size / voxel_size)
    block_size = block_shape * voxel_size
    grid_roi = volume.gt.roi
    block_means = _block_means(volume, grid_roi, block_shape)
    box_blocks = Coordinate(max(1, o // b) for o, b in zip(output_size, block_size, strict=True))
    fractions = _box_means(block_means, box_blocks)
    best = float(fractions.max()) if fractions.size else 0.0
    coverage = float(block_means.mean()) if block_means.size else 0.0
    valid = np.flatnonzero(fractions >= min_masked - 1e-6).astype(np.int32)
    if len(valid) == 0:
        raise SamplingError(
            f"dataset '{volume.name}': no location reaches min_masked={min_masked:g}: the mask "
            f"covers {coverage:.1%} of the gt ROI and the best fraction of any "
            f"{tuple(output_size)} output region is {best:.3f}"
        )
    return SamplingMap(
        roi=grid_roi,
        block_size=block_size,
        box_blocks=box_blocks,
        box_grid_shape=fractions.shape,
        valid_boxes=valid,
        best_fraction=best,
        coverage=coverage,
    )


def _block_means(volume: TrainingVolume, grid_roi: Roi, block_shape: Coordinate) -> np.ndarray:
    """Mean of the effective mask (mask within the gt ROI) over each block, as float32."""
    voxel_size = volume.voxel_size
    grid_shape = grid_roi.shape / voxel_size
    num_blocks = Coordinate(-(-g // b) for g, b in zip(grid_shape, block_shape, strict=True))
    if volume.mask is None:
        means = np.ones(tuple(num_blocks), dtype=np.float32)
        _discount_partial_blocks(means, grid_shape, block_shape)
        return means
    mask = volume.mask
    mask_roi = mask.roi.intersect(grid_roi)
    means = np.zeros(tuple(num_blocks), dtype=np.float32)
    if mask_roi.empty:
        return means
    # Read slabs one block thick along z so that memory stays bounded for large masks.
    slab_voxels = block_shape[0]
    for bz in range(num_blocks[0]):
        slab = Roi(
            grid_roi.offset + Coordinate(bz * slab_voxels, 0, 0) * voxel_size,
            Coordinate(slab_voxels, grid_shape[1], grid_shape[2]) * voxel_size,
        )
        means[bz] = _slab_block_means(mask, slab, mask_roi, block_shape, num_blocks)
    return means


def _slab_block_means(mask, slab: Roi, mask_roi: Roi, block_shape, num_blocks) -> np.ndarray:
    voxel_size = mask.voxel_size
    padded = Coordinate(n * b for n, b in zip(num_blocks, block_shape, strict=True))
    data = np.zeros((block_shape[0], padded[1], padded[2]), dtype=np.float32)
    inside = slab.intersect(mask_roi)
    if not inside.empty:
        src = tuple(
            slice(b, e)
            for b, e in zip(
                (inside.begin - mask.roi.offset) / voxel_size,
                (inside.end - mask.roi.offset) / voxel_size,
                strict=True,
            )
        )
        dst = tuple(
            slice(b, e)
            for b, e in zip(
                (inside.begin - slab.offset) / voxel_size,
                (inside.end - slab.offset) / voxel_size,
                strict=True,
            )
        )
        data[dst] = np.asarray(mask._source_data[src]) > 0
    blocks = data.reshape(1, block_shape[0], num_blocks[1], block_shape[1], num_blocks[2], -1)
    return blocks.mean(axis=(1, 3, 5))[0]


def _discount_partial_blocks(means: np.ndarray, grid_shape, block_shape) -> None:
    """Scale blocks that stick out of the grid by the fraction of them inside it."""
    for axis, (g, b) in enumerate(zip(grid_shape, block_shape, strict=True)):
        remainder = g % b
        if remainder:
            index = [slice(None)] * 3
            index[axis] = -1
            means[tuple(index)] *= remainder / b


def _box_means(block_means: np.ndarray, box_blocks: Coordinate) -> np.ndarray:
    """Mean over every box of ``box_blocks`` blocks, via an integral image (float64)."""
    if any(n < b for n, b in zip(block_means.shape, box_blocks, strict=True)):
        return np.zeros((0, 0, 0), dtype=np.float32)
    integral = np.zeros(tuple(s + 1 for s in block_means.shape), dtype=np.float64)
    integral[1:, 1:, 1:] = block_means.cumsum(0).cumsum(1).cumsum(2)
    bz, by, bx = box_blocks
    nz, ny, nx = (s - b + 1 for s, b in zip(block_means.shape, box_blocks, strict=True))
    i = integral
    total = (
        i[bz : bz + nz, by : by + ny, bx : bx + nx]
        - i[:nz, by : by + ny, bx : bx + nx]
        - i[bz : bz + nz, :ny, bx : bx + nx]
        - i[bz : bz + nz, by : by + ny, :nx]
        + i[:nz, :ny, bx : bx + nx]
        + i[:nz, by : by + ny, :nx]
        + i[bz : bz + nz, :ny, :nx]
        - i[:nz, :ny, :nx]
    )
    return (total / float(bz * by * bx)).astype(np.float32)
