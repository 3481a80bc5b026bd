"""Serial-section defects on raw: missing sections, low-contrast sections and artifacts."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import gunpowder as gp
import numpy as np
from funlib.persistence import Array

from voltrain.errors import ConfigError, DataError
from voltrain.kernels.augment_rng import augment_rng
from voltrain.kernels.normalize import normalize_factor_for
from voltrain.nodes.raw_intensity_augment import RawIntensityAugment

# this augment's random stream (see voltrain.kernels.augment_rng)
RNG_STREAM = "defect"

# what happens to a section, as drawn per section
INTACT, MISSING, LOW_CONTRAST, ARTIFACT = 0, 1, 2, 3
FILLS: tuple[str, ...] = ("zero", "mean")


@dataclass(frozen=True)
class DefectParams:
    """The random draw of one ``SectionDefectAugment`` application.

    Arrays have one entry per section of raw along the augment's axis: ``kinds`` holds
    ``INTACT``, ``MISSING``, ``LOW_CONTRAST`` or ``ARTIFACT``; ``contrast`` the factor of a
    low-contrast section; ``artifact_sections`` and ``artifact_offsets`` the section and
    in-plane voxel offset of the artifact volume pasted into an ``ARTIFACT`` section.
    """

    apply: bool
    kinds: np.ndarray
    contrast: np.ndarray
    artifact_sections: np.ndarray
    artifact_offsets: np.ndarray


class SectionDefectAugment(RawIntensityAugment):
    """Damage whole sections of raw as serial-section EM does; gt and mask are untouched.

    Every section of raw along ``axis`` draws, on its own, one of: missing (with
    ``prob_missing``: filled with 0 or the section's mean), low contrast (with
    ``prob_low_contrast``: ``mean + f * (section - mean)``, ``f`` uniform in
    ``[contrast_min, contrast_max]``, so the mean stays and the standard deviation shrinks
    by ``f``), an artifact (with ``prob_artifact``: ``section * (1 - alpha) + artifact *
    alpha``, from a random section and in-plane window of the artifact volume), or intact.
    The three kinds exclude each other, so their probabilities may sum to at most 1. The
    artifact volume (raw and an alpha mask of the same shape and voxel size, in-plane as
    fine as raw) is opened once per process in ``setup``; stored integers are scaled to
    [0, 1] as raw is by default (uint8 / 255, uint16 / 65535).

    Args:
        raw_key: the float raw array (values ~[0, 1]).
        prob_missing: probability of a section going missing.
        prob_low_contrast: probability of a section losing contrast.
        prob_artifact: probability of an artifact pasted into a section.
        fill: ``"zero"`` or ``"mean"``: what a missing section holds.
        contrast_min: smallest contrast factor of a low-contrast section, in [0, 1].
        contrast_max: largest contrast factor, in [contrast_min, 1].
        artifact_raw: the artifact intensities (a path ``voltrain.data.open_array`` reads).
        artifact_alpha: the artifact's alpha mask, in [0, 1] (or uint8 0..255).
        axis: the spatial axis sections are cut along (0 = z).
        p: probability of applying the augment to a sample.
    """

    rng_stream = RNG_STREAM

    def __init__(
        self,
        raw_key: gp.ArrayKey,
        prob_missing: float = 0.05,
        prob_low_contrast: float = 0.05,
        prob_artifact: float = 0.0,
        fill: Literal["zero", "mean"] = "zero",
        contrast_min: float = 0.1,
        contrast_max: float = 0.3,
        artifact_raw=None,
        artifact_alpha=None,
        axis: int = 0,
        p: float = 1.0,
    ):
        probabilities = {
            "prob_missing": prob_missing,
            "prob_low_contrast": prob_low_contrast,
            "prob_artifact": prob_artifact,
        }
        for name, value in probabilities.items():
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if sum(probabilities.values()) > 1.0:
            raise ConfigError(
                "prob_missing + prob_low_contrast + prob_artifact must be <= 1 (a section "
                f"gets one defect at most), got {sum(probabilities.values()):g}"
            )
        if fill not in FILLS:
            raise ConfigError(f"fill must be one of {', '.join(FILLS)}, got '{fill}'")
        if not 0.0 <= contrast_min <= 1.0:
            raise ConfigError(f"contrast_min must be in [0, 1], got {contrast_min}")
        if not contrast_min <= contrast_max <= 1.0:
            raise ConfigError(
                f"contrast_max must be in [contrast_min, 1] = [{contrast_min}, 1], "
                f"got {contrast_max}"
            )
        if (prob_artifact > 0) != (artifact_raw is not None and artifact_alpha is not None):
            raise ConfigError(
                "prob_artifact > 0 needs artifact_raw and artifact_alpha, and they are only "
                f"used with it (prob_artifact {prob_artifact}, artifact_raw {artifact_raw}, "
                f"artifact_alpha {artifact_alpha})"
            )
        if axis not in (0, 1, 2):
            raise ConfigError(f"axis must be a spatial axis 0, 1 or 2, got {axis}")
        if sum(probabilities.values()) == 0.0:
            warnings.warn(
                "SectionDefectAugment with all probabilities 0 does nothing", stacklevel=2
            )
        super().__init__(raw_key, p)
        self.prob_missing = prob_missing
        self.prob_low_contrast = prob_low_contrast
        self.prob_artifact = prob_artifact
        self.fill = fill
        self.contrast_min = contrast_min
        self.contrast_max = contrast_max
        self.artifact_paths = (artifact_raw, artifact_alpha)
        self.axis = axis
        self._artifacts: tuple[Array, Array] | None = None

    def setup(self) -> None:
        super().setup()
        if self.prob_artifact > 0 and self._artifacts is None:
            self._artifacts = self._open_artifacts()

    def _open_artifacts(self) -> tuple[Array, Array]:
        # imported here: voltrain.data sits above the nodes (it opens whole datasets)
        from voltrain.data import open_array

        raw_path, alpha_path = self.artifact_paths
        artifact = open_array(raw_path, "artifact_raw")
        alpha = open_array(alpha_path, "artifact_alpha")
        if artifact.shape != alpha.shape or artifact.voxel_size != alpha.voxel_size:
            raise DataError(
                f"artifact_alpha: '{alpha_path}' has shape {alpha.shape} and voxel_size "
                f"{tuple(alpha.voxel_size)}, artifact_raw '{raw_path}' {artifact.shape} and "
                f"{tuple(artifact.voxel_size)}; they must match"
            )
        raw_voxel_size = self.spec[self.raw_key].voxel_size
        plane = [a for a in range(3) if a != self.axis]
        if any(artifact.voxel_size[a] != raw_voxel_size[a] for a in plane):
            raise DataError(
                f"artifact_raw: '{raw_path}' has voxel_size {tuple(artifact.voxel_size)}, "
                f"raw {tuple(raw_voxel_size)}; they must match within the sections"
            )
        return artifact, alpha

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        spec = request[self.raw_key]
        shape = tuple(spec.roi.shape / self.spec[self.raw_key].voxel_size)
        self._params = self.make_params(augment_rng(request.random_seed, self.rng_stream), shape)
        deps = gp.BatchRequest()
        deps[self.raw_key] = spec.copy()
        return deps

    def make_params(self, rng: np.random.Generator, shape: tuple[int, ...]) -> DefectParams:
        """Draw whether to apply, and each section's defect, for raw of spatial ``shape``."""
        apply = bool(rng.random() < self.p)
        sections = shape[self.axis]
        draws = rng.random(sections)
        thresholds = np.cumsum([self.prob_missing, self.prob_low_contrast, self.prob_artifact])
        kinds = np.where(draws < thresholds[-1], np.searchsorted(thresholds, draws, "right") + 1, 0)
        contrast = rng.uniform(self.contrast_min, self.contrast_max, sections)
        artifact_sections = np.zeros(sections, dtype=np.int64)
        artifact_offsets = np.zeros((sections, 2), dtype=np.int64)
        if self._artifacts is not None:
            art_shape = self._artifacts[0].shape
            plane = [a for a in range(3) if a != self.axis]
            room = [art_shape[a] - shape[a] for a in plane]
            if min(room) < 0:
                raise DataError(
                    f"artifact_raw: '{self.artifact_paths[0]}' of shape {art_shape} is "
                    f"smaller within its sections than raw's {tuple(shape)}"
                )
            artifact_sections = rng.integers(0, art_shape[self.axis], sections)
            artifact_offsets = np.stack([rng.integers(0, r + 1, sections) for r in room], 1)
        return DefectParams(
            apply, kinds.astype(np.int64), contrast, artifact_sections, artifact_offsets
        )

    def apply_transform(self, data: np.ndarray, params: DefectParams) -> np.ndarray:
        """Return ``data`` (``(..., z, y, x)``) with the drawn sections damaged.

        Changes ``data`` in place when it is writable (raw is this node's to change; a copy
        of the whole array would cost more than the few damaged sections).
        """
        out = data if data.flags.writeable else data.copy()
        # sections first; leading channel axes stay together within each section
        sections = np.moveaxis(out, data.ndim - 3 + self.axis, 0)
        plane_axes = (-2, -1)
        for index in np.flatnonzero(params.kinds):
            section = sections[index]
            kind = params.kinds[index]
            mean = section.mean(axis=plane_axes, keepdims=True)
            if kind == MISSING:
                section[...] = mean if self.fill == "mean" else 0
            elif kind == LOW_CONTRAST:
                section[...] = mean + section.dtype.type(params.contrast[index]) * (section - mean)
            else:
                artifact, alpha = self._artifact_window(params, index, section.shape[-2:])
                section[...] = section * (1 - alpha) + artifact * alpha
        return out

    def _artifact_window(
        self, params: DefectParams, index: int, plane_shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The artifact and alpha pixels pasted into section ``index``, scaled to [0, 1]."""
        window: list[int | slice] = []
        offsets = iter(params.artifact_offsets[index])
        plane = iter(plane_shape)
        for a in range(3):
            if a == self.axis:
                window.append(int(params.artifact_sections[index]))
            else:
                begin = int(next(offsets))
                window.append(slice(begin, begin + next(plane)))
        pixels = []
        for array in self._artifacts:
            stored = np.asarray(array._source_data[tuple(window)])
            factor = normalize_factor_for(stored.dtype, None)
            pixels.append((stored * factor).astype(np.float32))
        return pixels[0], pixels[1]
