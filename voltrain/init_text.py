"""The words ``voltrain init`` writes: the config's comments and the summary it prints."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voltrain.init_geometry import (
    FLAT_KERNEL_RATIO,
    estimated_gib,
    fine_axes,
    is_anisotropic,
    sections_are_coarse,
)
from voltrain.init_task import task_comments
from voltrain.models.unet import UNetConfig

if TYPE_CHECKING:
    from voltrain.init_config import ArrayFacts, InitRequest

CHOSEN_TASK_KEYS = ("scale", "sigma", "num_classes", "ignore_label")
"""The task keys ``init`` derives from the data, printed in its summary."""


def header(request: InitRequest, facts: ArrayFacts) -> str:
    """The comment at the top of the file: where it came from and how to use it."""
    voxel = " x ".join(str(v) for v in facts.voxel_size)
    kind = "anisotropic" if is_anisotropic(tuple(facts.voxel_size)) else "isotropic"
    return (
        f"Written by `voltrain init` for {request.raw}\n"
        f"(voxel size {voxel} (z, y, x), {kind}; raw {facts.raw_shape} voxels of "
        f"{facts.raw_dtype}).\n"
        "Train with `voltrain train <this file> --out runs/<name>`; pick a learning rate\n"
        "with `voltrain lr-find <this file>`. The editor header of the README's\n"
        "`voltrain schema` section checks and completes this file as you edit it.\n"
    )


def comments(
    facts: ArrayFacts, model: UNetConfig, input_shape: list[int], request: InitRequest
) -> dict[str, str]:
    """Comments above the keys whose values ``init`` chose, saying why."""
    voxel_size = tuple(facts.voxel_size)
    plane = fine_axes(voxel_size)
    coverage = facts.mask_coverage
    masked = (
        "No mask: every labelled voxel is trusted, and samples keep half their output\n"
        "inside the labelled region."
        if coverage is None
        else f"The mask covers {coverage:.1%} of its array; each sample's output must be at\n"
        "least this masked (half the coverage, at most 0.5), so most draws succeed."
    )
    geometry = (
        f"Rotation and transposition stay in the plane of axes {plane} (equal voxel sizes);\n"
        "elastic jitter is in-plane only."
        if is_anisotropic(voxel_size)
        else "Isotropic voxels: rotation and transposition in 3D."
    )
    if not np.issubdtype(facts.raw_dtype, np.integer):
        geometry += (
            f"\nRaw is {facts.raw_dtype}: it is used as is, and the intensity and noise augments"
            "\nclip it to [0, 1]; scale it to [0, 1] (trainer.normalize_factor) if it is not."
        )
    return {
        "model.downsample_factors": "Per level, (z, y, x) pooling: the finer axes are pooled "
        "until the voxels are\nnear-isotropic, then all axes.",
        "model.kernel_sizes": "Per level, top first, the (z, y, x) convolution kernel: 1 "
        f"along axes still {FLAT_KERNEL_RATIO:g}x or\nmore coarser than the finest at that "
        "level (no mixing of sections before the plane\nhas context), 3 once the voxels are "
        "near-isotropic.",
        **task_comments(request.task, voxel_size, facts.classes),
        "segment": "`voltrain segment` settings: one segmentation per threshold, to compare"
        + (
            ";\neach z section flooded on its own (sections may be shifted)."
            if sections_are_coarse(voxel_size)
            else "."
        ),
        "trainer.learning_rate": "Run `voltrain lr-find` on this file to choose it.",
        "trainer.input_shape": f"A shape the U-Net accepts, proportional to its context (most "
        f"output per input);\nabout {estimated_gib(model, input_shape):.1f} GiB of accelerator "
        "memory per sample. Larger: `voltrain init --memory`.",
        "trainer.num_data_fetchers": "Loader processes: the CPUs here, less one for training.",
        "trainer.min_masked": masked,
        "trainer.augments": geometry,
    }


def summary(
    out: Path,
    facts: ArrayFacts,
    model: UNetConfig,
    shape,
    output,
    trainer: dict[str, Any],
    task: dict[str, Any],
) -> str:
    """What ``voltrain init`` prints: the choices and the file."""
    voxel = " x ".join(str(v) for v in facts.voxel_size)
    return "\n".join(
        [
            f"voxel size:  {voxel} (z, y, x)",
            f"downsample:  {model.downsample_factors}",
            f"kernels:     {[list(k) for k in model.level_kernel_shapes]}",
            f"input shape: {list(shape)} -> output {list(output)} "
            f"(about {estimated_gib(model, shape):.1f} GiB to train)",
            f"loader:      {trainer['num_data_fetchers']} data fetchers, "
            f"min_masked {trainer['min_masked']}",
            f"task:        {_task_line(task)}",
            f"config:      {out}",
        ]
    )


def _task_line(task: dict[str, Any]) -> str:
    """The task type and the keys ``init`` chose for it, e.g. ``lsd (sigma 80.0)``."""
    chosen = {k: v for k, v in task.items() if k in CHOSEN_TASK_KEYS}
    keys = ", ".join(f"{k} {v}" for k, v in chosen.items())
    return f"{task['type']} ({keys})" if keys else task["type"]
