"""Elastic deformation plus rotation of raw, labels and mask with one world-space map."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate, Roi

from voltrain.errors import ConfigError
from voltrain.kernels.augment_rng import augment_rng
from voltrain.kernels.resample import (
    WorldTransform,
    axis_angle_rotation,
    plane_rotation,
    resample,
    source_box,
)

# this augment's random stream (see voltrain.kernels.augment_rng)
RNG_STREAM = "elastic"


@dataclass(frozen=True)
class ElasticParams:
    """The random draw for one request: ``transform`` is None when the augment is skipped.

    ``rotation_angle`` is in degrees: signed for a rotation within a plane, the unsigned
    angle about the rotation's own axis for a 3D rotation.
    """

    transform: WorldTransform | None
    rotation_angle: float = 0.0


class ElasticAugment(gp.BatchFilter):
    """Deform and rotate arrays by one smooth map, so raw and labels stay aligned.

    Every output voxel centre ``x`` (world units) reads its source at
    ``T(x) = c + R (x - c) + d(x)``: ``c`` is the centre of the requested ROIs, ``R`` a
    random rotation and ``d`` a displacement interpolated (Catmull-Rom) from Gaussian
    jitter on a coarse control grid. Each key is resampled on its own voxel grid, so
    arrays of different voxel sizes and ROIs stay registered. Upstream must accept
    requests beyond the data (put a ``gp.Pad(key, None)`` after the source): rotated
    requests reach outside it, and out-of-volume voxels read as zero. Each key's
    upstream request is the voxel-aligned box its deformed samples read, no more.

    Args:
        raw_key: Array interpolated trilinearly (intensities).
        nearest_keys: Arrays sampled by nearest neighbour, keeping their dtype (label ids
            and masks, which must never be blended).
        control_point_spacing: World distance between control points, per spatial axis.
        jitter_sigma: Standard deviation of each control point's displacement, per
            spatial axis, in world units.
        rotate: Whether to rotate at all.
        rotation_axes: Spatial axes spanning the rotation plane. None (or all three axes)
            rotates in 3D; ``[1, 2]`` rotates within (y, x) only and keeps z in place.
        max_rotation: Largest rotation angle in degrees, drawn uniformly from
            ``[-max_rotation, max_rotation]``. In 3D, 180 draws a uniformly random
            rotation; less turns about a uniformly random axis.
        p: Probability of applying the augment; otherwise arrays pass through untouched.
    """

    def __init__(
        self,
        raw_key: gp.ArrayKey,
        nearest_keys: Sequence[gp.ArrayKey],
        control_point_spacing: Sequence[float],
        jitter_sigma: Sequence[float],
        rotate: bool = True,
        rotation_axes: Sequence[int] | None = None,
        max_rotation: float = 180.0,
        p: float = 1.0,
    ):
        self.raw_key = raw_key
        self.nearest_keys = list(nearest_keys)
        self.control_point_spacing = _per_axis(control_point_spacing, "control_point_spacing")
        self.jitter_sigma = _per_axis(jitter_sigma, "jitter_sigma")
        if np.any(self.control_point_spacing <= 0):
            raise ConfigError(f"control_point_spacing must be > 0, got {control_point_spacing}")
        if np.any(self.jitter_sigma < 0):
            raise ConfigError(f"jitter_sigma must be >= 0, got {jitter_sigma}")
        if not 0.0 <= max_rotation <= 180.0:
            raise ConfigError(f"max_rotation must be in [0, 180] degrees, got {max_rotation}")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"p must be in [0, 1], got {p}")
        self.rotate = rotate
        self.rotation_axes = _rotation_plane(rotation_axes)
        self.max_rotation = float(max_rotation)
        self.p = float(p)
        self._params: ElasticParams | None = None
        rotates = rotate and max_rotation > 0
        if not rotates and not np.any(self.jitter_sigma > 0):
            warnings.warn(
                "ElasticAugment with jitter_sigma 0 and no rotation leaves arrays unchanged",
                stacklevel=2,
            )

    @property
    def keys(self) -> list[gp.ArrayKey]:
        """Every array this node resamples, raw first."""
        return [self.raw_key, *self.nearest_keys]

    def setup(self) -> None:
        for key in self.keys:
            self.updates(key, self.spec[key].copy())
        self.enable_autoskip()

    def make_params(self, rng: np.random.Generator, request: gp.BatchRequest) -> ElasticParams:
        """Draw whether to apply, the rotation and the control-point jitter for a request."""
        if rng.random() >= self.p:
            return ElasticParams(transform=None)
        rotation, angle = self._draw_rotation(rng)
        total_roi = self._total_roi(request)
        begin = np.array(total_roi.begin, dtype=np.float64)
        shape = np.array(total_roi.shape, dtype=np.float64)
        spacing = self.control_point_spacing
        # one control point before the ROI; Catmull-Rom reads two past the last cell
        grid_shape = tuple(int(n) for n in np.ceil(shape / spacing) + 3)
        displacements = rng.normal(size=(*grid_shape, 3)) * self.jitter_sigma
        transform = WorldTransform(
            centre=begin + shape / 2.0,
            rotation=rotation,
            grid_origin=begin - spacing,
            grid_spacing=spacing.copy(),
            displacements=displacements,
        )
        return ElasticParams(transform=transform, rotation_angle=angle)

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        rng = augment_rng(request.random_seed, RNG_STREAM)
        self._params = self.make_params(rng, request)
        dependencies = gp.BatchRequest()
        for key in self._requested_keys(request):
            spec = request[key].copy()
            if self._params.transform is not None:
                spec.roi = self._source_roi(key, spec.roi, self._params.transform)
            dependencies[key] = spec
        return dependencies

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch | None:
        assert self._params is not None, "process() runs after prepare()"
        transform = self._params.transform
        if transform is None:
            return None
        outputs = gp.Batch()
        for key in self._requested_keys(request):
            source = batch[key]
            spec = source.spec.copy()
            spec.roi = request[key].roi
            data = _resample_array(source, spec, transform, linear=key == self.raw_key)
            outputs[key] = gp.Array(data, spec)
        return outputs

    def _requested_keys(self, request: gp.BatchRequest) -> list[gp.ArrayKey]:
        return [key for key in self.keys if key in request]

    def _total_roi(self, request: gp.BatchRequest) -> Roi:
        rois = [request[key].roi for key in self._requested_keys(request)]
        total = rois[0]
        for roi in rois[1:]:
            total = total.union(roi)
        return total

    def _draw_rotation(self, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        if not self.rotate or self.max_rotation == 0:
            return np.eye(3), 0.0
        if self.rotation_axes is not None:
            angle = rng.uniform(-self.max_rotation, self.max_rotation)
            return plane_rotation(*self.rotation_axes, math.radians(angle)), angle
        if self.max_rotation == 180.0:
            # a normalised 4D Gaussian is a uniformly random unit quaternion; (|w|, v)
            # stays uniform because the half-sphere w >= 0 already covers every rotation
            w, *vector = rng.normal(size=4)
            angle = 2.0 * math.atan2(float(np.linalg.norm(vector)), abs(w))
        else:
            vector = rng.normal(size=3)
            angle = math.radians(rng.uniform(-self.max_rotation, self.max_rotation))
        return axis_angle_rotation(vector, angle), math.degrees(abs(angle))

    def _source_roi(self, key: gp.ArrayKey, roi: Roi, transform: WorldTransform) -> Roi:
        """The voxel-aligned upstream ROI that every sample of ``roi`` reads from."""
        voxel_size = self.spec[key].voxel_size
        begin, end = source_box(
            transform,
            np.array(roi.begin, dtype=np.float64),
            np.array(voxel_size, dtype=np.float64),
            tuple(roi.shape / voxel_size),
            np.array(voxel_size, dtype=np.float64),
        )
        begin = Coordinate(tuple(int(v) for v in begin))
        return Roi(begin, Coordinate(tuple(int(v) for v in end)) - begin)


def _per_axis(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (3,):
        raise ConfigError(f"{name} needs one value per spatial axis (z, y, x), got {values}")
    return array


def _rotation_plane(rotation_axes: Sequence[int] | None) -> tuple[int, int] | None:
    """The two axes of a planar rotation, or None for a rotation in 3D."""
    if rotation_axes is None:
        return None
    axes = sorted(set(rotation_axes))
    if len(axes) != len(rotation_axes) or len(axes) < 2 or not all(0 <= a < 3 for a in axes):
        raise ConfigError(
            f"rotation_axes must be 2 or 3 distinct spatial axes in 0..2, got {rotation_axes}"
        )
    return None if len(axes) == 3 else (axes[0], axes[1])


def _resample_array(
    source: gp.Array, spec: gp.ArraySpec, transform: WorldTransform, linear: bool
) -> np.ndarray:
    """Resample every channel of ``source`` onto the voxel grid of ``spec``."""
    out_shape = tuple(spec.roi.shape / spec.voxel_size)
    data = source.data
    channels = data.reshape((-1, *data.shape[-3:]))
    resampled = [
        resample(
            channel,
            np.array(source.spec.roi.begin),
            np.array(source.spec.voxel_size),
            np.array(spec.roi.begin),
            np.array(spec.voxel_size),
            out_shape,
            transform,
            linear,
        )
        for channel in channels
    ]
    out = resampled[0] if len(resampled) == 1 else np.stack(resampled)
    out = out.reshape((*data.shape[:-3], *out_shape))
    if linear and not np.issubdtype(data.dtype, np.floating):
        # integer intensities: round instead of truncating, and stay in range
        info = np.iinfo(data.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(data.dtype, copy=False)
