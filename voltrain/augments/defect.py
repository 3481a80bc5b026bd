"""Config of the serial-section defect augment (``type: defect``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import gunpowder as gp
from pydantic import Field

from voltrain.augments.base import AugmentConfig, register_augment
from voltrain.io.read import ArraySource, resolve_source
from voltrain.nodes.section_defect_augment import SectionDefectAugment


@register_augment("defect")
class DefectAugmentConfig(AugmentConfig):
    """Missing, low-contrast and artifact sections of raw, each section drawn on its own.

    ``p`` is the probability that a sample gets defects at all; each section along
    ``axis`` then goes missing, loses contrast or gets an artifact with its own
    probability (at most one of them). Artifact paths are read like data paths (zarr,
    OME-NGFF, N5, HDF5), absolute or relative to the config file's directory.
    """

    type: Literal["defect"] = "defect"
    axis: int = Field(0, description="spatial axis the sections are cut along (0 = z)")
    prob_missing: float = Field(0.05, description="probability of a section going missing")
    prob_low_contrast: float = Field(0.05, description="probability of a section losing contrast")
    prob_artifact: float = Field(
        0.0, description="probability of an artifact pasted into a section"
    )
    fill: Literal["zero", "mean"] = Field(
        "zero", description="a missing section holds 0 or the section's mean"
    )
    contrast_min: float = Field(
        0.1, description="smallest contrast factor of a low-contrast section, in [0, 1]"
    )
    contrast_max: float = Field(0.3, description="largest contrast factor, in [contrast_min, 1]")
    artifact_raw: str | ArraySource | None = Field(
        None, description="artifact intensities (a volume, e.g. artifacts.zarr/raw)"
    )
    artifact_alpha: str | ArraySource | None = Field(
        None, description="the artifacts' alpha mask in [0, 1], same shape as artifact_raw"
    )

    def resolved(self, base_dir: Path) -> DefectAugmentConfig:
        update = {
            key: resolve_source(getattr(self, key), base_dir)
            for key in ("artifact_raw", "artifact_alpha")
            if getattr(self, key) is not None
        }
        return self.model_copy(update=update)

    def node(
        self, raw_key: gp.ArrayKey, gt_key: gp.ArrayKey, mask_key: gp.ArrayKey
    ) -> gp.BatchFilter:
        return SectionDefectAugment(
            raw_key,
            prob_missing=self.prob_missing,
            prob_low_contrast=self.prob_low_contrast,
            prob_artifact=self.prob_artifact,
            fill=self.fill,
            contrast_min=self.contrast_min,
            contrast_max=self.contrast_max,
            artifact_raw=self.artifact_raw,
            artifact_alpha=self.artifact_alpha,
            axis=self.axis,
            p=self.p,
        )
