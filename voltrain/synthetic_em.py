"""Synthetic electron-microscopy volumes that look and fail like real ones, for benchmarks.

``voltrain.synthetic`` draws clean cells with uniform dark membranes: any threshold on raw
intensity segments them. Real EM does not forgive that. This generator renders what makes
segmentation hard and what a network has to learn to ignore:

- curved cell boundaries (Voronoi cells warped by a smooth displacement field), each label
  one connected component;
- membranes whose thickness and darkness vary smoothly over the volume;
- textured cytoplasm whose brightness differs from cell to cell;
- dark mitochondria-like ellipsoids and rings of vesicles *inside* cells, at least
  ``ORGANELLE_MARGIN_NM`` from every label boundary: dark like membranes, yet not boundaries;
- blur, per-section brightness changes and strong noise (low signal-to-noise);
- anisotropic voxels (``VOXEL_SIZES``: 40×4×4 nm serial sections, 8×8×8 nm FIB-SEM); all
  sizes are in world units, so both look alike at their own resolution;
- optional defects: missing sections (raw 0) and sections shifted in-plane (raw, labels,
  mask and organelles shifted together, as an aligner's error would leave them).

The container holds ``raw`` (uint8), ``labels`` (uint64, no background), ``mask`` (uint8) and
``organelles`` (uint8: 0 none, 1 mitochondrion, 2 vesicle), all with ``voxel_size`` and
``offset`` attributes. ``make_em_pair`` writes a training volume and a held-out volume drawn
with another seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from funlib.geometry import Coordinate
from scipy import ndimage
from scipy.spatial.transform import Rotation
from skimage.measure import label as connected_components

from voltrain.errors import ConfigError
from voltrain.synthetic import (
    SyntheticVolume,
    check_volume_args,
    smooth_blob_mask,
    voronoi_labels,
    write_datasets,
)

VOXEL_SIZES = {"isotropic": (8, 8, 8), "anisotropic": (40, 4, 4)}
DEFAULT_SHAPES = {"isotropic": (96, 96, 96), "anisotropic": (24, 192, 192)}
HELDOUT_SEED_OFFSET = 1_000_003
ORGANELLE_MARGIN_NM = 16.0

CELL_SIZE_NM = 200.0  # mean distance between cell centres
WARP_FRACTION = 0.2  # boundary displacement, as a fraction of the cell size
MIN_PIECE_NM = 40.0  # warped pieces of a cell smaller than this cube join their neighbour
CYTOPLASM_RANGE = (0.58, 0.8)  # mean brightness of a cell, of full scale
TEXTURE_NM, TEXTURE_AMPLITUDE = 10.0, 0.05
MEMBRANE_HALF_WIDTH_NM = (4.0, 12.0)
MEMBRANE_DARKNESS = (0.4, 0.85)  # fraction of the cytoplasm's brightness removed
FIELD_SMOOTHNESS_NM = 120.0  # how fast membrane thickness and darkness change
MITO_SEMI_AXES_NM = ((30.0, 55.0), (16.0, 26.0))  # long axis, the two short axes
MITO_DARKNESS = (0.45, 0.65)
MITOCHONDRIA_PER_CELL = 1.0
VESICLE_RADIUS_NM, VESICLE_RIM_NM = (15.0, 22.0), 5.0
VESICLE_CLUSTERS_PER_CELL, VESICLES_PER_CLUSTER, VESICLE_SPREAD_NM = 0.4, (5, 12), 45.0
VESICLE_DARKNESS = 0.55
BLUR_NM = 5.0
SECTION_GAIN, SECTION_SHIFT = 0.06, 0.03
NOISE_STD = 0.12
SECTION_MISALIGNMENT_NM = (16.0, 48.0)


@dataclass(frozen=True)
class EmVolume(SyntheticVolume):
    """A written synthetic EM volume (see ``SyntheticVolume``) and what it holds beyond it.

    Args:
        organelles: name of the organelle dataset (1 mitochondrion, 2 vesicle).
        seed: the seed it was drawn with.
        missing_sections: z indices of sections whose raw is 0.
        shifted_sections: z indices of sections shifted in-plane.
    """

    organelles: str = "organelles"
    seed: int = 0
    missing_sections: tuple[int, ...] = ()
    shifted_sections: tuple[int, ...] = ()


def make_em_volume(
    container: str | Path,
    shape: Sequence[int] = DEFAULT_SHAPES["isotropic"],
    voxel_size: Sequence[int] = VOXEL_SIZES["isotropic"],
    offset: Sequence[int] = (0, 0, 0),
    num_cells: int | None = None,
    mask_fraction: float = 1.0,
    noise_std: float = NOISE_STD,
    missing_sections: int = 0,
    shifted_sections: int = 0,
    chunk_shape: Sequence[int] = (32, 32, 32),
    seed: int = 0,
    zarr_format: int = 3,
) -> EmVolume:
    """Write a synthetic EM volume (raw, labels, mask, organelles) into a new zarr container.

    An existing container is replaced; the same arguments always give the same arrays.

    Args:
        container: path of the zarr container to create.
        shape: shape in voxels (z, y, x).
        voxel_size: voxel size in nm, e.g. ``VOXEL_SIZES["anisotropic"]``.
        offset: world offset of the first voxel, a multiple of ``voxel_size``.
        num_cells: Voronoi cells before warping; default: one per ``CELL_SIZE_NM`` cube.
        mask_fraction: fraction of voxels where the mask is 1 (smooth blobs below 1).
        noise_std: standard deviation of the Gaussian noise, as a fraction of full scale.
        missing_sections: number of sections (z) whose raw is blank.
        shifted_sections: number of sections shifted in-plane by 16-48 nm.
        chunk_shape: zarr chunk shape in voxels.
        seed: seed of the random generator.
        zarr_format: 2 or 3.
    """
    voxel_size_nm = np.asarray(voxel_size, dtype=np.float64)
    if num_cells is None:
        world_volume = float(np.prod(np.asarray(shape) * voxel_size_nm))
        num_cells = max(2, round(world_volume / CELL_SIZE_NM**3))
    shape_c, voxel_size_c, offset_c, chunk_c = check_volume_args(
        shape, voxel_size, offset, num_cells, mask_fraction, chunk_shape, zarr_format
    )
    _check_em_args(shape_c, noise_std, missing_sections, shifted_sections)
    rng = np.random.default_rng(seed)

    labels = warped_cells(shape_c, voxel_size_c, num_cells, rng)
    boundary_distance = surface_distance(labels, voxel_size_nm)
    organelles, organelle_darkness = render_organelles(
        boundary_distance, voxel_size_nm, len(np.unique(labels)), rng
    )
    raw = render_raw(labels, boundary_distance, organelle_darkness, voxel_size_nm, noise_std, rng)
    if mask_fraction < 1.0:
        mask = smooth_blob_mask(shape_c, mask_fraction, rng)
    else:
        mask = np.ones(tuple(shape_c), dtype=np.uint8)
    arrays = {"raw": raw, "labels": labels, "mask": mask, "organelles": organelles}
    missing, shifted = add_defects(arrays, missing_sections, shifted_sections, voxel_size_nm, rng)

    container = Path(container)
    write_datasets(container, arrays, voxel_size_c, offset_c, chunk_c, zarr_format)
    volume = EmVolume(
        container=container,
        raw="raw",
        labels="labels",
        mask="mask",
        shape=shape_c,
        voxel_size=voxel_size_c,
        offset=offset_c,
        mask_coverage=float(mask.mean()),
        seed=seed,
        missing_sections=missing,
        shifted_sections=shifted,
    )
    zarr.open_group(str(container), mode="r+").attrs["voltrain_synthetic_em"] = {
        "seed": seed,
        "noise_std": noise_std,
        "missing_sections": list(volume.missing_sections),
        "shifted_sections": list(volume.shifted_sections),
    }
    return volume


def make_em_pair(
    directory: str | Path,
    variant: str = "isotropic",
    shape: Sequence[int] | None = None,
    seed: int = 0,
    **kwargs,
) -> tuple[EmVolume, EmVolume]:
    """Write ``train.zarr`` (``seed``) and ``heldout.zarr`` (another seed) into ``directory``.

    ``variant`` picks the voxel size and default shape: ``isotropic`` (8×8×8 nm, 96³) or
    ``anisotropic`` (40×4×4 nm, 24×192×192). Other arguments go to ``make_em_volume``.
    """
    if variant not in VOXEL_SIZES:
        raise ConfigError(f"variant must be one of {sorted(VOXEL_SIZES)}, got '{variant}'")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    geometry = {"shape": shape or DEFAULT_SHAPES[variant], "voxel_size": VOXEL_SIZES[variant]}
    train = make_em_volume(directory / "train.zarr", seed=seed, **geometry, **kwargs)
    heldout_seed = seed + HELDOUT_SEED_OFFSET
    heldout = make_em_volume(directory / "heldout.zarr", seed=heldout_seed, **geometry, **kwargs)
    return train, heldout


def smooth_field(
    shape: Coordinate,
    voxel_size_nm: np.ndarray,
    sigma_nm: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Gaussian-filtered white noise with zero mean and unit standard deviation."""
    noise = rng.standard_normal(tuple(shape), dtype=np.float32)
    field = ndimage.gaussian_filter(noise, sigma_nm / voxel_size_nm, mode="wrap")
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def smooth_range(field: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map a unit-variance field into [low, high] (about ±2 standard deviations)."""
    return low + (high - low) * np.clip(0.5 + field / 4.0, 0.0, 1.0)


def warped_cells(
    shape: Coordinate, voxel_size: Coordinate, num_cells: int, rng: np.random.Generator
) -> np.ndarray:
    """Voronoi cells with curved faces; every id (1..n, consecutive) one connected piece."""
    cells = voronoi_labels(shape, voxel_size, num_cells, rng)
    voxel_size_nm = np.asarray(voxel_size, dtype=np.float64)
    grid = np.indices(tuple(shape), dtype=np.float32)
    amplitude_nm = WARP_FRACTION * CELL_SIZE_NM
    for axis in range(3):
        field = smooth_field(shape, voxel_size_nm, CELL_SIZE_NM / 2, rng)
        grid[axis] += field * (amplitude_nm / voxel_size_nm[axis])
    warped = ndimage.map_coordinates(cells, grid, order=0, mode="nearest")
    pieces = connected_components(warped, background=0, connectivity=1)
    # Nearest-neighbour warping leaves specks of a cell inside its neighbour; give them to
    # the piece around them, as a proofreader would.
    sizes = np.bincount(pieces.ravel())
    min_voxels = (MIN_PIECE_NM**3) / float(np.prod(voxel_size_nm))
    speck = (sizes < min_voxels)[pieces]
    nearest = ndimage.distance_transform_edt(
        speck, sampling=tuple(voxel_size), return_distances=False, return_indices=True
    )
    pieces = pieces[tuple(nearest)]
    return connected_components(pieces, background=0, connectivity=1).astype(np.uint64)


def surface_distance(labels: np.ndarray, voxel_size_nm: np.ndarray) -> np.ndarray:
    """Distance in nm from each voxel centre to the nearest label boundary surface.

    A boundary lies half a voxel from the centres of the voxels on either side of it, so a
    boundary between two 40 nm sections is 20 nm from both: membranes parallel to the
    sections fade, as in serial-section EM, instead of darkening whole sections.
    """
    distance = np.full(labels.shape, np.inf, dtype=np.float32)
    for axis in range(labels.ndim):
        lower = [slice(None)] * labels.ndim
        upper = [slice(None)] * labels.ndim
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        differs = labels[tuple(lower)] != labels[tuple(upper)]
        border = np.zeros(labels.shape, dtype=bool)
        border[tuple(lower)] |= differs
        border[tuple(upper)] |= differs
        if not border.any():
            continue
        along_axis = ndimage.distance_transform_edt(~border, sampling=tuple(voxel_size_nm))
        np.minimum(distance, along_axis + voxel_size_nm[axis] / 2, out=distance)
    return distance


def render_organelles(
    boundary_distance: np.ndarray,
    voxel_size_nm: np.ndarray,
    num_cells: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Place mitochondria and vesicles well inside cells; return their ids and darkness.

    An organelle of radius r is centred only where the distance to the nearest boundary is
    at least r + ``ORGANELLE_MARGIN_NM``, so it never touches or crosses a label boundary.
    """
    organelles = np.zeros(boundary_distance.shape, dtype=np.uint8)
    darkness = np.zeros(boundary_distance.shape, dtype=np.float32)
    (long_low, long_high), (short_low, short_high) = MITO_SEMI_AXES_NM
    for _ in range(rng.poisson(MITOCHONDRIA_PER_CELL * num_cells)):
        semi_axes = np.array(
            [rng.uniform(long_low, long_high), *rng.uniform(short_low, short_high, 2)]
        )
        centre = _free_voxel(boundary_distance, semi_axes[0] + ORGANELLE_MARGIN_NM, rng)
        if centre is None:
            continue
        rotation = Rotation.random(random_state=rng).as_matrix()
        box, offsets = _neighbourhood(centre, semi_axes[0], voxel_size_nm, darkness.shape)
        inside = (((offsets @ rotation) / semi_axes) ** 2).sum(axis=-1) <= 1.0
        organelles[box][inside] = 1
        darkness[box][inside] = rng.uniform(*MITO_DARKNESS)
    for _ in range(rng.poisson(VESICLE_CLUSTERS_PER_CELL * num_cells)):
        reach = VESICLE_SPREAD_NM + VESICLE_RADIUS_NM[1] + ORGANELLE_MARGIN_NM
        cluster = _free_voxel(boundary_distance, reach, rng)
        if cluster is None:
            continue
        for _ in range(rng.integers(*VESICLES_PER_CLUSTER, endpoint=True)):
            radius = rng.uniform(*VESICLE_RADIUS_NM)
            jitter = rng.normal(0.0, VESICLE_SPREAD_NM / 2, 3) / voxel_size_nm
            centre = tuple(
                np.clip(np.round(cluster + jitter), 0, np.array(darkness.shape) - 1).astype(int)
            )
            if boundary_distance[centre] < radius + ORGANELLE_MARGIN_NM:
                continue
            box, offsets = _neighbourhood(
                np.array(centre), radius + VESICLE_RIM_NM, voxel_size_nm, darkness.shape
            )
            rim = np.exp(-0.5 * ((np.linalg.norm(offsets, axis=-1) - radius) / VESICLE_RIM_NM) ** 2)
            organelles[box][rim > 0.5] = 2
            darkness[box] = np.maximum(darkness[box], VESICLE_DARKNESS * rim)
    return organelles, darkness


def _free_voxel(
    distance: np.ndarray, clearance: float, rng: np.random.Generator
) -> np.ndarray | None:
    """A random voxel at least ``clearance`` nm from every boundary, or None."""
    candidates = np.flatnonzero(distance >= clearance)
    if candidates.size == 0:
        return None
    return np.array(np.unravel_index(rng.choice(candidates), distance.shape))


def _neighbourhood(
    centre: np.ndarray, radius_nm: float, voxel_size_nm: np.ndarray, shape: tuple[int, ...]
) -> tuple[tuple[slice, ...], np.ndarray]:
    """The voxel box within ``radius_nm`` of ``centre`` and its voxels' nm offsets from it."""
    reach = np.ceil(radius_nm / voxel_size_nm).astype(int)
    start = np.maximum(centre - reach, 0)
    stop = np.minimum(centre + reach + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
    axes = [
        (np.arange(a, b) - c) * v
        for a, b, c, v in zip(start, stop, centre, voxel_size_nm, strict=True)
    ]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return box, offsets


def render_raw(
    labels: np.ndarray,
    boundary_distance: np.ndarray,
    organelle_darkness: np.ndarray,
    voxel_size_nm: np.ndarray,
    noise_std: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Render uint8 intensities: cytoplasm, organelles, membranes, blur, sections, noise."""
    shape = Coordinate(labels.shape)
    cell_brightness = rng.uniform(*CYTOPLASM_RANGE, int(labels.max()) + 1).astype(np.float32)
    texture = smooth_field(shape, voxel_size_nm, TEXTURE_NM, rng)
    intensity = cell_brightness[labels] + TEXTURE_AMPLITUDE * texture
    intensity *= 1.0 - organelle_darkness
    half_width = smooth_range(
        smooth_field(shape, voxel_size_nm, FIELD_SMOOTHNESS_NM, rng), *MEMBRANE_HALF_WIDTH_NM
    )
    contrast = smooth_range(
        smooth_field(shape, voxel_size_nm, FIELD_SMOOTHNESS_NM, rng), *MEMBRANE_DARKNESS
    )
    intensity *= 1.0 - contrast * np.exp(-0.5 * (boundary_distance / half_width) ** 2)
    intensity = ndimage.gaussian_filter(intensity, BLUR_NM / voxel_size_nm)
    gain = 1.0 + SECTION_GAIN * rng.uniform(-1, 1, shape[0]).astype(np.float32)
    shift = SECTION_SHIFT * rng.uniform(-1, 1, shape[0]).astype(np.float32)
    intensity = intensity * gain[:, None, None] + shift[:, None, None]
    intensity += noise_std * rng.standard_normal(intensity.shape, dtype=np.float32)
    return np.clip(np.rint(255.0 * intensity), 0, 255).astype(np.uint8)


def add_defects(
    arrays: dict[str, np.ndarray],
    missing_sections: int,
    shifted_sections: int,
    voxel_size_nm: np.ndarray,
    rng: np.random.Generator,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Blank and shift distinct inner sections in place; return their sorted z indices."""
    count = missing_sections + shifted_sections
    sections = rng.choice(np.arange(1, arrays["raw"].shape[0] - 1), count, replace=False)
    missing = tuple(sorted(int(z) for z in sections[:missing_sections]))
    shifted = tuple(sorted(int(z) for z in sections[missing_sections:]))
    for z in shifted:
        shift_section(list(arrays.values()), z, voxel_size_nm, rng)
    arrays["raw"][list(missing)] = 0
    return missing, shifted


def shift_section(
    arrays: list[np.ndarray], z: int, voxel_size_nm: np.ndarray, rng: np.random.Generator
) -> None:
    """Shift section ``z`` of every array in-plane by the same 16-48 nm, edges repeated."""
    distance = rng.uniform(*SECTION_MISALIGNMENT_NM)
    angle = rng.uniform(0, 2 * np.pi)
    shift = np.round(distance * np.array([np.sin(angle), np.cos(angle)]) / voxel_size_nm[1:])
    for array in arrays:
        array[z] = ndimage.shift(array[z], shift, order=0, mode="nearest")


def _check_em_args(
    shape: Coordinate, noise_std: float, missing_sections: int, shifted_sections: int
) -> None:
    if noise_std < 0:
        raise ConfigError(f"noise_std must be 0 or more, got {noise_std}")
    if missing_sections < 0 or shifted_sections < 0:
        raise ConfigError("missing_sections and shifted_sections must be 0 or more")
    if missing_sections + shifted_sections > max(0, shape[0] - 2):
        raise ConfigError(
            f"{missing_sections + shifted_sections} defect sections do not fit in "
            f"{shape[0]} sections (the first and last are never defective)"
        )
