"""The ``task`` (and ``segment``) sections ``voltrain init`` writes, with their defaults.

Tasks with required keys get values from the arrays ``init`` already opened:

- ``distances.scale`` and ``lsd.sigma`` (world units) are ``max(10 × finest voxel,
  2 × coarsest voxel)``: 80 nm at 8 nm isotropic (the LSD paper's sigma), and at 40 × 4 × 4 nm
  also 80 nm, so that the window spans two sections rather than one.
- ``multiclass.num_classes`` is the largest class id in the labels plus one, read whole when
  the labels hold at most ``MAX_SCAN_VOXELS`` voxels (chunk by chunk); larger labels, or
  ones that are not integers, need ``--num-classes``. An id of 255 apart from the others
  (0..k with k < 254) is the common mark of unlabelled voxels: it becomes ``ignore_label``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from voltrain.errors import ConfigError, DataError

TASK_NAMES = ("affinities", "binary", "distances", "multiclass", "lsd", "affinities+lsd")
"""The built-in tasks ``voltrain init`` writes a section for."""
MAX_SCAN_VOXELS = 2**27
"""Labels up to this many voxels (128 Mi, seconds to read) are scanned for class ids."""
MAX_CLASSES = 256
"""More ids than this are object ids, not classes."""
UNLABELLED = 255
"""The id datasets commonly use for unlabelled voxels in class labels."""
NEIGHBORHOOD = [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]


@dataclass(frozen=True)
class ClassIds:
    """The class ids of multiclass labels: how many, and which one carries no loss."""

    num_classes: int
    ignore_label: int | None = None
    counted: bool = False
    """Read from the labels (rather than given as ``--num-classes``)."""


def has_affinities(task: str) -> bool:
    """Whether the task predicts affinities, so that ``voltrain segment`` can use it."""
    return task in ("affinities", "affinities+lsd")


def world_window(voxel_size: tuple[int, ...]) -> float:
    """``distances.scale`` and ``lsd.sigma``: a length of several voxels along every axis."""
    return float(max(10 * min(voxel_size), 2 * max(voxel_size)))


def task_section(task: str, voxel_size: tuple[int, ...], classes: ClassIds | None) -> dict:
    """The ``task`` mapping for ``task`` (``classes`` is needed for multiclass)."""
    window = world_window(voxel_size)
    multiclass: dict[str, Any] = {"num_classes": classes.num_classes if classes else None}
    if classes and classes.ignore_label is not None:
        multiclass["ignore_label"] = classes.ignore_label
    sections: dict[str, dict[str, Any]] = {
        "affinities": {"neighborhood": NEIGHBORHOOD, "balance_weights": True},
        "binary": {"balance_weights": True},
        "distances": {"scale": window},
        "multiclass": multiclass,
        "lsd": {"sigma": window},
        "affinities+lsd": {"neighborhood": NEIGHBORHOOD, "balance_weights": True, "sigma": window},
    }
    return {"type": task, **sections[task]}


def segment_section(coarse_sections: bool) -> dict[str, Any]:
    """The ``segment`` mapping: a few thresholds to compare, and with ``coarse_sections``
    (z the coarse axis) sections flooded one by one, since they may be shifted."""
    section: dict[str, Any] = {"thresholds": [0.3, 0.5, 0.7]}
    if coarse_sections:
        section["fragments_per_section"] = True
    return section


def count_classes(gt, path: str) -> ClassIds:
    """The class ids of the labels at ``path``: their largest id plus one classes, and 255
    as ``ignore_label`` where it stands apart from the others.

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
    import dask.array  # here: the command line imports this module to list the tasks

    ids = [int(i) for i in dask.array.unique(gt.data).compute()]  # chunk by chunk
    ignore = UNLABELLED if len(ids) > 1 and ids[-1] == UNLABELLED and ids[-2] < 254 else None
    largest = ids[-2] if ignore is not None else ids[-1]
    if largest < 1 or largest >= MAX_CLASSES or ids[0] < 0:
        raise DataError(
            f"--gt: '{path}' holds ids {ids[0]}..{largest}, not 2 to {MAX_CLASSES} classes; "
            "pass --num-classes for multiclass"
        )
    return ClassIds(largest + 1, ignore, counted=True)


def task_comments(
    task: str, voxel_size: tuple[int, ...], classes: ClassIds | None
) -> dict[str, str]:
    """Comments above the task keys ``init`` chose."""
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
            if classes and classes.counted
            else "Given by --num-classes.",
            "task.ignore_label": f"Id {UNLABELLED} stands apart from the classes: unlabelled "
            "voxels, no loss.",
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
