"""``voltrain init``: write a first experiment config that fits the user's arrays.

It reads the arrays' voxel sizes, shapes and dtypes (through ``voltrain.data.open_array``,
so every format training reads), then chooses what users otherwise guess: per-level
downsampling, per-level kernels and a valid input shape (``voltrain.init_geometry``), the
task's required keys (``voltrain.init_task``), augments that suit the anisotropy, loader
workers from the CPU count and ``min_masked`` from the mask's coverage.
The config is validated like any other before the file is written, and the file is
written whole (to a temporary name, then renamed).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from funlib.geometry import Coordinate

from voltrain.commented_yaml import commented_yaml
from voltrain.data import open_array
from voltrain.errors import ConfigError, DataError
from voltrain.experiment import parse_config
from voltrain.init_geometry import (
    MEMORY_USE,
    activation_bytes_per_voxel,
    centred,
    choose_input_shape,
    downsample_factors,
    estimated_gib,
    fine_axes,
    is_anisotropic,
    kernel_sizes,
    sections_are_coarse,
    target_shape,
)
from voltrain.init_task import (
    ClassIds,
    count_classes,
    has_affinities,
    segment_section,
    task_section,
)
from voltrain.init_text import comments, header, summary
from voltrain.models.unet import UNetConfig, output_shape

MAX_FETCHERS = 16
INTENSITY_AUGMENTS = (
    {"type": "intensity", "scale_min": 0.9, "scale_max": 1.1, "shift_min": -0.1, "shift_max": 0.1},
    {"type": "gamma", "gamma_min": 0.75, "gamma_max": 1.33, "p": 0.5},
    {"type": "noise", "mode": "gaussian", "var": 0.005, "p": 0.5},
)
"""The intensity augments every written config gets, after the geometric ones."""


@dataclass(frozen=True)
class InitRequest:
    """What ``voltrain init`` was asked for (its command-line flags)."""

    raw: str
    gt: str
    mask: str | None = None
    task: str = "affinities"
    input_size: str | None = None
    memory_gib: float = 8.0
    levels: int = 3
    num_fmaps: int = 12
    num_classes: int | None = None
    """``--num-classes`` (multiclass); None: read from the labels."""


@dataclass(frozen=True)
class ArrayFacts:
    """What ``init`` learnt from the arrays."""

    voxel_size: Coordinate
    raw_shape: tuple[int, ...]
    raw_dtype: np.dtype
    gt_shape: tuple[int, ...]
    """The labels' extent in raw voxels."""
    mask_coverage: float | None
    classes: ClassIds | None = None
    """The multiclass labels' ids: ``--num-classes``, else counted in the labels."""


def write_initial_config(request: InitRequest, out: Path) -> str:
    """Inspect the arrays, write the commented config to ``out``; return what to print."""
    _check_request(request)
    facts = inspect_arrays(request)
    config, model = initial_config(request, facts)
    parse_config(config, source=str(out))  # the same checks `voltrain train` makes
    notes = comments(facts, model, config["trainer"]["input_shape"], request)
    text = commented_yaml(config, notes, header(request, facts))
    if not out.parent.is_dir():
        raise ConfigError(f"--out: directory {out.parent} does not exist")
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(text)
    partial.replace(out)
    shape = config["trainer"]["input_shape"]
    output = output_shape(model, shape)
    return summary(out, facts, model, shape, output, config["trainer"], config["task"])


def _check_request(request: InitRequest) -> None:
    if not 0 <= request.levels <= 6:
        raise ConfigError(f"--levels must be between 0 and 6, got {request.levels}")
    if request.num_fmaps <= 0:
        raise ConfigError(f"--num-fmaps must be positive, got {request.num_fmaps}")
    if not request.memory_gib > 0:
        raise ConfigError(f"--memory must be positive GiB, got {request.memory_gib}")
    if request.num_classes is not None and request.task != "multiclass":
        raise ConfigError(f"--num-classes is for --task multiclass, not {request.task}")
    if request.num_classes is not None and request.num_classes < 2:
        raise ConfigError(f"--num-classes must be at least 2, got {request.num_classes}")


def inspect_arrays(request: InitRequest) -> ArrayFacts:
    """Open raw, gt and mask as training would, and measure the mask's coverage."""
    raw = open_array(request.raw, "--raw")
    gt = open_array(request.gt, "--gt")
    mask = open_array(request.mask, "--mask") if request.mask else None
    return ArrayFacts(
        voxel_size=raw.voxel_size,
        raw_shape=tuple(raw.roi.shape / raw.voxel_size),
        raw_dtype=np.dtype(raw.dtype),
        # in raw voxels, the network's unit, should the labels be coarser than raw
        gt_shape=tuple(gt.roi.shape / raw.voxel_size),
        mask_coverage=None if mask is None else mask_coverage(mask, request.mask),
        classes=_classes(request, gt),
    )


def _classes(request: InitRequest, gt) -> ClassIds | None:
    if request.task != "multiclass":
        return None
    if request.num_classes is not None:
        return ClassIds(request.num_classes)
    return count_classes(gt, request.gt)


def mask_coverage(mask, path: str) -> float:
    """The fraction of the mask's voxels that are set, read chunk by chunk (dask), so a
    mask larger than memory is fine."""
    coverage = float((mask.data > 0).mean().compute())
    if coverage == 0:
        raise ConfigError(f"--mask: '{path}' is empty: no voxel is set, nothing can be trained")
    return coverage


def initial_config(request: InitRequest, facts: ArrayFacts) -> tuple[dict[str, Any], UNetConfig]:
    """The config mapping, in the order it is written, and its U-Net."""
    voxel_size = tuple(facts.voxel_size)
    factors = downsample_factors(voxel_size, request.levels)
    pooling = max((max(f) for f in factors), default=2)
    model = centred(
        UNetConfig(
            num_fmaps=request.num_fmaps,
            fmap_inc_factor=5 if pooling == 3 else 3,
            downsample_factors=factors,
            kernel_sizes=kernel_sizes(voxel_size, factors),
        )
    )
    tied = fine_axes(voxel_size) if is_anisotropic(voxel_size) else list(range(3))
    target = _requested_shape(request, model)
    shape = choose_input_shape(model, target, facts.gt_shape, tied)
    _check_fits(request, facts, model, shape)
    dataset = {"name": Path(request.gt).parent.stem or "volume", "raw": request.raw}
    dataset |= {"gt": request.gt} | ({"mask": request.mask} if request.mask else {})
    kernel = "kernel_size" if model.kernel_sizes is None else "kernel_sizes"
    config = {
        "data": {"train": [{k: _absolute(v) if k != "name" else v for k, v in dataset.items()}]},
        "model": model.model_dump(
            include={"num_fmaps", "fmap_inc_factor", "downsample_factors", kernel}
        ),
        "task": task_section(request.task, voxel_size, facts.classes),
        "trainer": _trainer(facts, list(shape)),
    }
    if has_affinities(request.task):
        config["segment"] = segment_section(sections_are_coarse(voxel_size))
    return config, model


def _check_fits(request: InitRequest, facts: ArrayFacts, model: UNetConfig, shape) -> None:
    """Refuse a network whose smallest input is mostly padding or over the memory budget."""
    for axis, (size, raw) in enumerate(zip(shape, facts.raw_shape, strict=True)):
        if size > 2 * raw:
            raise DataError(
                f"--raw: its {raw} voxels along {'zyx'[axis]} are fewer than half the input "
                f"({size}) of a {request.levels}-level U-Net; pass fewer --levels"
            )
    needed = estimated_gib(model, shape)
    if request.input_size is None and needed > request.memory_gib:
        raise ConfigError(
            f"--memory: the smallest input that fits, {list(shape)}, needs about "
            f"{needed:.1f} GiB, more than {request.memory_gib:g}; pass fewer --levels or "
            "--num-fmaps"
        )


def _requested_shape(request: InitRequest, model: UNetConfig) -> list[float]:
    """The target input shape: ``--input-size`` as Z,Y,X or a voxel count, else memory."""
    text = (request.input_size or "").strip().lower()
    if "," in text:
        try:
            sizes = [float(part) for part in text.split(",")]
        except ValueError:
            sizes = []
        if len(sizes) != 3 or any(s <= 0 for s in sizes):
            raise ConfigError(f"--input-size: expected Z,Y,X voxel counts, got '{text}'")
        return sizes
    if text:
        voxels = _voxel_count(text)
    else:
        budget = request.memory_gib * 2**30 * MEMORY_USE
        voxels = budget / activation_bytes_per_voxel(model)
    return target_shape(model, voxels)


def _voxel_count(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+(?:e[0-9]+)?)\s*([km]?)", text)
    try:
        value = float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[match.group(2)]
    except (AttributeError, ValueError):
        value = -1.0
    if value < 1:
        raise ConfigError(f"--input-size: expected a voxel count (2e6, 500k, 2M), got '{text}'")
    return value


def _absolute(path: str) -> str:
    """A local path made absolute (the config may be written elsewhere); URLs unchanged."""
    return path if "://" in path else str(Path(path).resolve())


def _trainer(facts: ArrayFacts, input_shape: list[int]) -> dict[str, Any]:
    coverage = facts.mask_coverage
    return {
        "type": "gunpowder",
        "batch_size": 1,
        "learning_rate": 1e-4,
        "input_shape": input_shape,
        "max_steps": 100_000,
        "num_data_fetchers": num_data_fetchers(),
        "min_masked": 0.5 if coverage is None else round(min(0.5, coverage / 2), 3),
        "snapshot_interval": 1000,
        "checkpoint_interval": 5000,
        "log_every": 50,
        "clipping": {"mode": "global_norm", "max_norm": 1.0},
        "seed": 0,
        "augments": augments_for(tuple(facts.voxel_size), facts.raw_dtype),
    }


def num_data_fetchers() -> int:
    """Loader workers: one per CPU this process may use, less one for the training loop."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_FETCHERS, cpus - 1))


def augments_for(voxel_size: tuple[int, ...], raw_dtype: np.dtype) -> list[dict[str, Any]]:
    """The augment list: geometry suited to the anisotropy, then intensity, then the map of
    raw to [-1, 1] (for integer raw, which training first scales to [0, 1])."""
    plane = fine_axes(voxel_size)
    anisotropic = is_anisotropic(voxel_size)
    coarsest = max(voxel_size)
    spacing = [10 * coarsest] * 3
    jitter = [spacing[a] / 10 if a in plane else 0 for a in range(3)]
    elastic: dict[str, Any] = {"type": "elastic", "control_point_spacing": spacing}
    elastic["jitter_sigma"] = jitter
    if anisotropic and len(plane) < 2:
        elastic["rotate"] = False  # no plane of equal voxel sizes to rotate in
    elif anisotropic:
        elastic |= {"rotate": True, "rotation_axes": plane, "max_rotation": 180}
    else:
        elastic["rotate"] = True
    simple = {"type": "simple", "mirror_axes": [0, 1, 2]}
    simple["transpose_axes"] = (plane if len(plane) > 1 else []) if anisotropic else [0, 1, 2]
    augments = [elastic, simple, *(dict(augment) for augment in INTENSITY_AUGMENTS)]
    if np.issubdtype(raw_dtype, np.integer):
        augments.append({"type": "intensity_scale_shift", "scale": 2.0, "shift": -1.0})
    return augments
