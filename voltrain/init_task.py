"""The ``task`` (and ``segment``) sections ``voltrain init`` writes, with their defaults.

Tasks with required keys get values from the arrays ``init`` already opened:

- ``distances.scale`` and ``lsd.sigma`` (world units) are ``max(10 × finest voxel,
  2 × coarsest voxel)``: 80 nm at 8 nm isotropic (the LSD paper's sigma), and at 40 × 4 × 4 nm
  also 80 nm, so that the window spans two sections rather than one.
- ``multiclass.num_classes`` is the largest class id in the labels plus one, read whole when
  the labels hold at most ``MAX_SCAN_VOXELS`` voxels (chunk by chunk); larger labels, or
  ones that are not integers, need ``--num-classes``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voltrain.errors import ConfigError, DataError
from voltrain.init_geometry import FLAT_KERNEL_RATIO

TASK_NAMES = ("affinities", "binary", "distances", "multiclass", "lsd", "affinities+lsd")
"""The built-in tasks ``voltrain init`` writes a section for."""
MAX_SCAN_VOXELS = 2**27
"""Labels up to this many voxels (128 Mi, seconds to read) are scanned for class ids."""
MAX_CLASSES = 256
"""More ids than this are object ids, not classes."""
NEIGHBORHOOD = [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]


def has_affinities(task: str) -> bool:
    """Whether the task predicts affinities, so that ``voltrain segment`` can use it."""
    return task in ("affinities", "affinities+lsd")


def world_window(voxel_size: tuple[int, ...]) -> float:
    """``distances.scale`` and ``lsd.sigma``: a length of several voxels along every axis."""
    return float(max(10 * min(voxel_size), 2 * max(voxel_size)))


def task_section(task: str, voxel_size: tuple[int, ...], num_classes: int | None) -> dict:
    """The ``task`` mapping for ``task`` (``num_classes`` is needed for multiclass)."""
    window = world_window(voxel_size)
    sections: dict[str, dict[str, Any]] = {
        "affinities": {"neighborhood": NEIGHBORHOOD, "balance_weights": True},
        "binary": {"balance_weights": True},
        "distances": {"scale": window},
        "multiclass": {"num_classes": num_classes},
        "lsd": {"sigma": window},
        "affinities+lsd": {"neighborhood": NEIGHBORHOOD, "balance_weights": True, "sigma": window},
    }
    return {"type": task, **sections[task]}


def segment_section(voxel_size: tuple[int, ...]) -> dict[str, Any]:
    """The ``segment`` mapping: a few thresholds to compare, sections flooded one by one
    where z is the coarse axis (serial sections may be shifted against each other)."""
    section: dict[str, Any] = {"thresholds": [0.3, 0.5, 0.7]}
    if sections_are_coarse(voxel_size):
        section["fragments_per_section"] = True
    return section


def sections_are_coarse(voxel_size: tuple[int, ...]) -> bool:
    """Whether z is the coarse axis, as in serial-section EM (40 x 4 x 4 nm)."""
    return voxel_size[0] >= FLAT_KERNEL_RATIO * max(voxel_size[1:])


def count_classes(gt, path: str) -> int:
    """``num_classes`` of the labels at ``path``: their largest id plus one.

    Raises ``ConfigError`` naming ``--num-classes`` when that cannot be read cheaply, and
    ``DataError`` when the labels hold a single class or look like object ids.
    """
    dtype = np.dtype(gt.dtype)
    if not np.issubdtype(dtype, np.integer) and dtype != np.bool_:
        raise ConfigError(
            f"--gt: '{path}' holds {dtype}, not class ids; pass --num-classes for multiclass"
        )
    voxels = int(np.prod(gt.shape))
    if voxels > MAX_SCAN_VOXELS:
        raise ConfigError(
            f"--gt: '{path}' has {voxels} voxels, too many to scan for class ids; pass "
            "--num-classes for multiclass"
        )
    largest = int(gt.data.max().compute())
    if largest < 1 or largest >= MAX_CLASSES:
        raise DataError(
            f"--gt: '{path}' holds ids 0..{largest}, not 2 to {MAX_CLASSES} classes; pass "
            "--num-classes for multiclass"
        )
    return largest + 1


def task_comments(task: str, voxel_size: tuple[int, ...], counted: bool) -> dict[str, str]:
    """Comments above the task keys ``init`` chose (``counted``: num_classes was read from
    the labels rather than given)."""
    window = world_window(voxel_size)
    rule = (
        f"World units: max(10 x finest voxel, 2 x coarsest voxel) = {window:g}, several\n"
        "voxels along every axis."
    )
    affinities = (
        "Affinities to neighbours along z, y, x; add long-range offsets (e.g. [0, -8, 0])\n"
        "for a more robust agglomeration."
    )
    notes = {
        "affinities": {"task": affinities},
        "binary": {"task": "Foreground (any label > 0) against background."},
        "distances": {
            "task": "Signed distance to the nearest object boundary, tanh(d / scale).",
            "task.scale": f"{rule}\nLarger: the prediction saturates farther from boundaries.",
        },
        "multiclass": {
            "task": "One class id per voxel (0 is background).",
            "task.num_classes": "The largest class id in the labels plus one."
            if counted
            else "Given by --num-classes.",
        },
        "lsd": {
            "task": "Local shape descriptors (10 channels) of each object.",
            "task.sigma": f"{rule}\nThe LSD paper used 80 nm at 8 nm voxels.",
        },
        "affinities+lsd": {
            "task": f"{affinities}\nThe LSDs are an auxiliary target; segmentation reads the "
            "affinities.",
            "task.sigma": rule,
        },
    }
    return notes[task]
