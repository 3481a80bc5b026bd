"""Synthetic microscopy-like training volumes for the demo, the tests and the benchmarks.

A volume is a zarr container with three datasets that funlib.persistence ``open_ds`` reads with
their voxel size and offset:

- ``raw`` (uint8): Voronoi cells with bright interiors and dark, about 2 voxels thick membranes,
  blurred and noisy like an electron micrograph;
- ``labels`` (uint64): the cell ids, 1..num_cells, no background;
- ``mask`` (uint8, 0/1): smooth blobs covering ``mask_fraction`` of the volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import prepare_ds
from scipy import ndimage

from voltrain.errors import ConfigError

INTERIOR_INTENSITY = 180.0
MEMBRANE_INTENSITY = 60.0
BLUR_SIGMA_VOXELS = 1.0
NOISE_STD = 15.0
MASK_SIGMA_VOXELS = 12.0
# Small volumes get proportionally smaller blobs, otherwise a 48^3 volume would hold one blob.
MASK_SIGMA_MAX_FRACTION_OF_SHAPE = 1 / 8


@dataclass(frozen=True)
class SyntheticVolume:
    """Where a synthetic volume was written and what it holds.

    Args:
        container: path of the zarr container.
        raw: name of the raw dataset inside the container.
        labels: name of the label dataset.
        mask: name of the mask dataset.
        shape: shape in voxels.
        voxel_size: voxel size in world units.
        offset: offset of the first voxel in world units.
        mask_coverage: fraction of voxels where the mask is 1.
    """

    container: Path
    raw: str
    labels: str
    mask: str
    shape: Coordinate
    voxel_size: Coordinate
    offset: Coordinate
    mask_coverage: float

    @property
    def roi(self) -> Roi:
        """The world-unit region every dataset of the volume covers."""
        return Roi(self.offset, self.shape * self.voxel_size)


def make_synthetic_volume(
    container: str | Path,
    shape: Sequence[int] = (128, 128, 128),
    voxel_size: Sequence[int] = (8, 8, 8),
    offset: Sequence[int] = (0, 0, 0),
    num_cells: int = 100,
    mask_fraction: float = 0.4,
    chunk_shape: Sequence[int] = (64, 64, 64),
    seed: int = 0,
    zarr_format: int = 3,
) -> SyntheticVolume:
    """Write a synthetic raw/labels/mask volume into a new zarr container.

    An existing container at ``container`` is replaced. The same arguments always give the same
    arrays.

    Args:
        container: path of the zarr container to create, e.g. ``"x/data.zarr"``.
        shape: shape in voxels.
        voxel_size: voxel size in world units (e.g. nm).
        offset: world-unit offset of the first voxel; a multiple of ``voxel_size``.
        num_cells: number of Voronoi cells (label ids ``1..num_cells``).
        mask_fraction: fraction of voxels where the mask is 1.
        chunk_shape: zarr chunk shape in voxels.
        seed: seed of the random generator.
        zarr_format: 2 or 3.

    Returns:
        A :class:`SyntheticVolume` describing what was written.
    """
    shape_c, voxel_size_c, offset_c, chunk_c = check_volume_args(
        shape, voxel_size, offset, num_cells, mask_fraction, chunk_shape, zarr_format
    )
    rng = np.random.default_rng(seed)

    labels = voronoi_labels(shape_c, voxel_size_c, num_cells, rng)
    mask = smooth_blob_mask(shape_c, mask_fraction, rng)
    raw = membrane_raw(labels, rng)

    container = Path(container)
    write_datasets(
        container,
        {"raw": raw, "labels": labels, "mask": mask},
        voxel_size_c,
        offset_c,
        chunk_c,
        zarr_format,
    )
    return SyntheticVolume(
        container=container,
        raw="raw",
        labels="labels",
        mask="mask",
        shape=shape_c,
        voxel_size=voxel_size_c,
        offset=offset_c,
        mask_coverage=float(mask.mean()),
    )


def write_datasets(
    container: Path,
    arrays: dict[str, np.ndarray],
    voxel_size: Coordinate,
    offset: Coordinate,
    chunk_shape: Coordinate,
    zarr_format: int,
) -> None:
    """Replace ``container`` by a zarr group holding ``arrays``, with voxel size and offset."""
    zarr.open_group(str(container), mode="w", zarr_format=zarr_format)
    for name, data in arrays.items():
        dataset = prepare_ds(
            str(container / name),
            shape=data.shape,
            offset=offset,
            voxel_size=voxel_size,
            chunk_shape=chunk_shape,
            dtype=data.dtype,
            mode="w",
            zarr_format=zarr_format,
        )
        dataset[dataset.roi] = data


def voronoi_labels(
    shape: Coordinate, voxel_size: Coordinate, num_cells: int, rng: np.random.Generator
) -> np.ndarray:
    """Label every voxel with the id (1..num_cells) of its nearest seed, in world distance."""
    seed_voxels = rng.choice(int(np.prod(shape)), size=num_cells, replace=False)
    is_background = np.ones(tuple(shape), dtype=bool)
    is_background.flat[seed_voxels] = False
    # A distance transform of the seeds is faster than a KD-tree query of every voxel, and
    # `sampling` keeps cells round in world units when voxels are anisotropic.
    nearest_seed = ndimage.distance_transform_edt(
        is_background,
        sampling=tuple(voxel_size),
        return_distances=False,
        return_indices=True,
    )
    seed_ids = np.zeros(tuple(shape), dtype=np.uint64)
    # Seeds are distinct voxels, so every id owns at least its seed voxel.
    seed_ids.flat[seed_voxels] = np.arange(1, num_cells + 1, dtype=np.uint64)
    return seed_ids[tuple(nearest_seed)]


def membrane_raw(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Render labels as uint8 intensities: bright cells, dark membranes, blur and noise."""
    membrane = cell_borders(labels)
    intensity = np.where(membrane, MEMBRANE_INTENSITY, INTERIOR_INTENSITY).astype(np.float32)
    intensity = ndimage.gaussian_filter(intensity, BLUR_SIGMA_VOXELS)
    intensity += NOISE_STD * rng.standard_normal(intensity.shape, dtype=np.float32)
    return np.clip(np.rint(intensity), 0, 255).astype(np.uint8)


def cell_borders(labels: np.ndarray) -> np.ndarray:
    """Voxels with a face neighbour of another id: both sides of a border, 2 voxels thick."""
    border = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        lower = [slice(None)] * labels.ndim
        upper = [slice(None)] * labels.ndim
        lower[axis] = slice(None, -1)
        upper[axis] = slice(1, None)
        differs = labels[tuple(lower)] != labels[tuple(upper)]
        border[tuple(lower)] |= differs
        border[tuple(upper)] |= differs
    return border


def smooth_blob_mask(
    shape: Coordinate, mask_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """A 0/1 mask of smooth blobs covering ``mask_fraction`` of the voxels."""
    sigma = [min(MASK_SIGMA_VOXELS, s * MASK_SIGMA_MAX_FRACTION_OF_SHAPE) for s in shape]
    smooth = ndimage.gaussian_filter(rng.random(tuple(shape), dtype=np.float32), sigma)
    num_masked = int(round(mask_fraction * smooth.size))
    mask = np.zeros(smooth.size, dtype=np.uint8)
    if num_masked > 0:
        # Taking the top-k voxels is thresholding at the (1 - mask_fraction) quantile, but
        # exact in coverage even at 0 and 1.
        brightest = np.argpartition(smooth.ravel(), smooth.size - num_masked)
        mask[brightest[smooth.size - num_masked :]] = 1
    return mask.reshape(smooth.shape)


def check_volume_args(
    shape: Sequence[int],
    voxel_size: Sequence[int],
    offset: Sequence[int],
    num_cells: int,
    mask_fraction: float,
    chunk_shape: Sequence[int],
    zarr_format: int,
) -> tuple[Coordinate, Coordinate, Coordinate, Coordinate]:
    """Check the arguments of a synthetic volume; return shape, voxel size, offset, chunks."""
    dims = len(shape)
    for name, value in (
        ("voxel_size", voxel_size),
        ("offset", offset),
        ("chunk_shape", chunk_shape),
    ):
        if len(value) != dims:
            raise ConfigError(f"{name} {tuple(value)} must have {dims} dimensions like shape")
    for name, value in (("shape", shape), ("voxel_size", voxel_size), ("chunk_shape", chunk_shape)):
        if any(int(v) <= 0 for v in value):
            raise ConfigError(f"{name} must be positive, got {tuple(value)}")
    shape_c, voxel_size_c = Coordinate(shape), Coordinate(voxel_size)
    offset_c, chunk_c = Coordinate(offset), Coordinate(chunk_shape)
    if offset_c % voxel_size_c != voxel_size_c * 0:
        raise ConfigError(f"offset {offset_c} must be a multiple of voxel_size {voxel_size_c}")
    if not 1 <= num_cells <= int(np.prod(shape_c)):
        raise ConfigError(f"num_cells must be between 1 and the number of voxels, got {num_cells}")
    if not 0.0 <= mask_fraction <= 1.0:
        raise ConfigError(f"mask_fraction must be between 0 and 1, got {mask_fraction}")
    if zarr_format not in (2, 3):
        raise ConfigError(f"zarr_format must be 2 or 3, got {zarr_format}")
    return shape_c, voxel_size_c, offset_c, chunk_c
