"""Elastic deformation, mirror/transpose, intensity and noise of raw in one resampling pass."""

from __future__ import annotations

from dataclasses import dataclass

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate, Roi

from voltrain.errors import ConfigError, DataError
from voltrain.kernels.augment_rng import augment_rng
from voltrain.kernels.normalize import normalize_factor_for
from voltrain.kernels.resample import (
    VoxelOps,
    WorldTransform,
    resample,
    source_box,
    source_index_map,
)
from voltrain.kernels.torch_deform import device_box_shape, pack_raw_map
from voltrain.nodes import (
    elastic_augment,
    intensity_augment,
    mirror_transpose_augment,
    noise_augment,
)
from voltrain.nodes.elastic_augment import ElasticAugment, ElasticParams
from voltrain.nodes.intensity_augment import IntensityAugment, IntensityParams
from voltrain.nodes.mirror_transpose_augment import (
    MirrorTransposeAugment,
    MirrorTransposeParams,
    check_transpose_voxel_sizes,
    twice_centre,
    upstream_roi,
)
from voltrain.nodes.noise_augment import NoiseAugment, NoiseParams


@dataclass(frozen=True)
class FusedParams:
    """The random draw of every fused augment for one request (None: not part of it)."""

    elastic: ElasticParams
    mirror: MirrorTransposeParams | None
    intensity: IntensityParams | None
    noise: NoiseParams | None


class FusedAugment(gp.BatchFilter):
    """Apply an ElasticAugment and the augments that follow it in one pass over each array.

    Separately, the elastic node resamples raw, the mirror/transpose node copies it, the
    intensity and noise nodes each make another float32 pass, and ``gp.Normalize`` before
    them converts the whole source box (several times the output, for a rotation) to
    float32. Fused, mirroring and transposition become part of the coordinate map
    (``WorldTransform.precomposed``), and normalisation, intensity change and noise are
    applied to each voxel as it is interpolated from the source in its stored dtype
    (``VoxelOps``). Labels and masks are sampled by nearest neighbour through the same map.

    The parameters are drawn by the component nodes' own ``make_params`` from their own
    random streams, so a request is augmented as the chain of separate nodes would augment
    it (same parameters, same noise, same voxels up to float rounding).

    Args:
        elastic: the elastic augment; its raw key and nearest keys are the arrays resampled.
        mirror: a MirrorTransposeAugment that follows it, or None.
        intensity: an IntensityAugment that follows that, or None.
        noise: a NoiseAugment that comes last, or None.
        normalize: raw arrives as stored (e.g. uint8) and is normalised here, replacing a
            ``gp.Normalize`` before this node. Otherwise raw must already be float.
        normalize_factor: raw is multiplied by it; None picks 1/255 for uint8, 1/65535 for
            uint16 and 1 for float raw.
        raw_source_key: set (with ``raw_map_key``) to resample raw on the training device
            (``torch_deform``): this node then provides raw's source box, of a fixed size,
            under this non-spatial key and a zero placeholder as raw.
        raw_map_key: the non-spatial key of the packed map and ops of raw
            (``torch_deform.pack_raw_map``).
    """

    def __init__(
        self,
        elastic: ElasticAugment,
        mirror: MirrorTransposeAugment | None = None,
        intensity: IntensityAugment | None = None,
        noise: NoiseAugment | None = None,
        normalize: bool = False,
        normalize_factor: float | None = None,
        raw_source_key: gp.ArrayKey | None = None,
        raw_map_key: gp.ArrayKey | None = None,
    ):
        self.elastic = elastic
        self.mirror = mirror
        self.intensity = intensity
        self.noise = noise
        self.raw_key = elastic.raw_key
        self.normalize = normalize
        self.normalize_factor = normalize_factor
        if (raw_source_key is None) != (raw_map_key is None):
            raise ConfigError("FusedAugment: give both raw_source_key and raw_map_key, or none")
        self.raw_source_key = raw_source_key
        self.raw_map_key = raw_map_key
        self._params: FusedParams | None = None

    def setup(self) -> None:
        self._keys = [key for key in self.elastic.keys if key in self.spec]
        if self.raw_key not in self._keys:
            raise ConfigError(f"FusedAugment: upstream does not provide {self.raw_key}")
        raw_spec = self.spec[self.raw_key].copy()
        self._factor = self._raw_factor(raw_spec.dtype)
        if self.normalize:
            raw_spec.dtype = np.float32
        self.updates(self.raw_key, raw_spec)
        for key in self._keys[1:]:
            self.updates(key, self.spec[key].copy())
        if self.raw_source_key is not None:
            dtype = self.spec[self.raw_key].dtype
            self.provides(self.raw_source_key, gp.ArraySpec(nonspatial=True, dtype=dtype))
            self.provides(self.raw_map_key, gp.ArraySpec(nonspatial=True, dtype=np.float64))
        if self.mirror is not None:
            transpose_axes = mirror_transpose_augment.resolve_axes(
                self.mirror.transpose_axes, 3, "transpose_axes"
            )
            voxel_sizes = {key: self.spec[key].voxel_size for key in self._keys}
            check_transpose_voxel_sizes(voxel_sizes, transpose_axes)
        self.enable_autoskip()

    def _raw_factor(self, dtype) -> float:
        return normalize_factor_for(dtype, self.normalize_factor) if self.normalize else 1.0

    def make_params(self, request: gp.BatchRequest) -> tuple[FusedParams, dict]:
        """Draw every component's parameters; also return the ROIs the elastic node sees.

        Returns ``(params, elastic_rois)``: ``elastic_rois[key]`` is the ROI that the
        mirror/transpose node would request from the elastic node.
        """
        seed = request.random_seed
        keys = [key for key in self._keys if key in request]
        rois = {key: request[key].roi for key in keys}
        mirror = None
        if self.mirror is not None:
            rng = augment_rng(seed, mirror_transpose_augment.RNG_STREAM)
            mirror = self.mirror.make_params(rng, 3)
            if mirror.changes_data:
                grid = self.spec.get_lcm_voxel_size(keys)
                centre = twice_centre(list(rois.values()), grid)
                rois = {key: upstream_roi(roi, mirror, centre, grid) for key, roi in rois.items()}
        elastic_request = gp.BatchRequest()
        for key, roi in rois.items():
            elastic_request[key] = gp.ArraySpec(roi=roi)
        rng = augment_rng(seed, elastic_augment.RNG_STREAM)
        elastic = self.elastic.make_params(rng, elastic_request)
        intensity = noise = None
        if self.intensity is not None:
            intensity = self.intensity.make_params(augment_rng(seed, intensity_augment.RNG_STREAM))
        if self.noise is not None:
            noise = self.noise.make_params(augment_rng(seed, noise_augment.RNG_STREAM))
        return FusedParams(elastic, mirror, intensity, noise), rois

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        self._params, elastic_rois = self.make_params(request)
        self._transforms = {}
        # an upper bound on the control grid's size, the same for every sample
        total = _union(list(elastic_rois.values()))
        spacing = self.elastic.control_point_spacing.min()
        self._grid_size = max(5, int(np.ceil(max(total.shape) / spacing)) + 3)
        deps = gp.BatchRequest()
        for key, elastic_roi in elastic_rois.items():
            transform = self._key_transform(request[key].roi, elastic_roi, elastic_rois)
            self._transforms[key] = transform
            spec = request[key].copy()
            spec.roi = self._source_roi(key, request[key].roi, transform)
            if key == self.raw_key and self.raw_source_key is not None:
                spec.roi = self._fixed_source_roi(request[key].roi, spec.roi)
            spec.dtype = None
            deps[key] = spec
        return deps

    def _fixed_source_roi(self, roi: Roi, needed: Roi) -> Roi:
        """A box of the same size for every sample, around the ``needed`` one."""
        voxel_size = self.spec[self.raw_key].voxel_size
        elastic = self.elastic
        shape = device_box_shape(
            np.array(roi.shape / voxel_size),
            np.array(voxel_size, dtype=np.float64),
            elastic.rotation_axes,
            elastic.rotate and elastic.max_rotation > 0,
            elastic.jitter_sigma,
        )
        begin = needed.center / voxel_size - Coordinate(shape) // 2
        return Roi(begin * voxel_size, Coordinate(shape) * voxel_size)

    def _key_transform(self, roi: Roi, elastic_roi: Roi, elastic_rois: dict) -> WorldTransform:
        """The map from ``roi``'s world points to source world points, for one array."""
        transform = self._params.elastic.transform
        if transform is None:
            total = _union(list(elastic_rois.values()))
            transform = WorldTransform.identity(
                np.array(total.begin, dtype=np.float64), np.array(total.shape, dtype=np.float64)
            )
        mirror = self._params.mirror
        if mirror is None or not mirror.changes_data:
            return transform
        return mirrored_transform(transform, mirror, roi, elastic_roi)

    def _source_roi(self, key: gp.ArrayKey, roi: Roi, transform: WorldTransform) -> Roi:
        voxel_size = np.array(self.spec[key].voxel_size, dtype=np.float64)
        begin, end = source_box(
            transform,
            np.array(roi.begin, dtype=np.float64),
            voxel_size,
            tuple(roi.shape / self.spec[key].voxel_size),
            voxel_size,
        )
        begin = Coordinate(int(v) for v in begin)
        return Roi(begin, Coordinate(int(v) for v in end) - begin)

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch:
        outputs = gp.Batch()
        for key, transform in self._transforms.items():
            source = batch[key]
            spec = source.spec.copy()
            spec.roi = request[key].roi
            if key == self.raw_key and self.raw_source_key is not None:
                data = self._pack_raw(source, spec, transform, outputs)
            elif key == self.raw_key:
                data = self._resample_raw(source, spec, transform)
                spec.dtype = data.dtype
            else:
                data = _resample_channels(source, spec, transform, linear=False, ops=None)
            outputs[key] = gp.Array(data, spec)
        return outputs

    def _resample_raw(self, source: gp.Array, spec: gp.ArraySpec, transform) -> np.ndarray:
        dtype = source.data.dtype
        if not self.normalize and not np.issubdtype(dtype, np.floating):
            raise DataError(
                f"FusedAugment needs float raw data for {self.raw_key}, got {dtype}; "
                "normalise raw first or let this node do it (normalize=True)"
            )
        ops = self.voxel_ops()
        data = _resample_channels(source, spec, transform, linear=True, ops=ops)
        if not self.normalize and dtype != np.float32:
            data = data.astype(dtype)
        return data

    def _pack_raw(self, source: gp.Array, spec: gp.ArraySpec, transform, outputs) -> np.ndarray:
        """Hand raw's source box and packed map to the device; return raw's placeholder."""
        out_shape = tuple(spec.roi.shape / spec.voxel_size)
        voxel_size = np.array(spec.voxel_size, dtype=np.float64)
        out_begin = np.array(spec.roi.begin, dtype=np.float64)
        index_map = source_index_map(
            transform,
            np.array(source.spec.roi.begin, dtype=np.float64),
            np.array(source.spec.voxel_size, dtype=np.float64),
            out_begin,
            voxel_size,
            out_shape,
        )
        coord_origin = (
            out_begin + 0.5 * voxel_size - transform.grid_origin
        ) / transform.grid_spacing
        grid_size = self._grid_size
        raw_map = pack_raw_map(
            index_map,
            out_shape,
            coord_origin,
            voxel_size / transform.grid_spacing,
            self.voxel_ops().kernel_args(),
            grid_size,
        )
        nonspatial = gp.ArraySpec(nonspatial=True)
        outputs[self.raw_source_key] = gp.Array(source.data, nonspatial.copy())
        outputs[self.raw_map_key] = gp.Array(raw_map, nonspatial)
        spec.dtype = np.float32
        return np.broadcast_to(np.float32(0.0), out_shape)

    def voxel_ops(self) -> VoxelOps:
        """Normalisation, intensity and noise of the current request, as kernel ops."""
        params = self._params
        settings: dict = {"factor": self._factor}
        if params.intensity is not None and params.intensity.apply:
            settings.update(
                scale=params.intensity.scale,
                shift=params.intensity.shift,
                clip_intensity=self.intensity.clip,
            )
        if params.noise is not None and params.noise.apply:
            noise = self.noise
            settings.update(
                noise_mode=noise.mode,
                noise_seed=params.noise.noise_seed,
                noise_var=noise.var,
                noise_amount=noise.amount,
                clip_noise=noise.clip,
            )
        return VoxelOps(**settings)


def mirrored_transform(
    transform: WorldTransform, mirror: MirrorTransposeParams, roi: Roi, elastic_roi: Roi
) -> WorldTransform:
    """``transform`` after the mirroring and transposition ``mirror``, for one array.

    ``roi`` is the array's ROI after mirroring, ``elastic_roi`` the ROI the mirror node
    reads it from (``upstream_roi``), where ``transform`` applies. Output voxel ``i`` along
    axis ``d`` holds voxel ``i`` (or ``n - 1 - i``, mirrored) of ``elastic_roi`` along axis
    ``mirror.transpose[d]``: an exact world map, so the fused pass reads what the two
    separate nodes would.
    """
    signs = []
    translation = np.zeros(3)
    for d, a in enumerate(mirror.transpose):
        if mirror.mirror[a]:
            signs.append(-1)
            translation[a] = elastic_roi.end[a] + roi.begin[d]
        else:
            signs.append(1)
            translation[a] = elastic_roi.begin[a] - roi.begin[d]
    return transform.precomposed(mirror.transpose, signs, translation)


def _union(rois: list[Roi]) -> Roi:
    total = rois[0]
    for roi in rois[1:]:
        total = total.union(roi)
    return total


def _resample_channels(
    source: gp.Array,
    spec: gp.ArraySpec,
    transform: WorldTransform,
    linear: bool,
    ops: VoxelOps | None,
) -> np.ndarray:
    """Resample every channel of ``source`` onto the voxel grid of ``spec``."""
    out_shape = tuple(spec.roi.shape / spec.voxel_size)
    data = source.data
    channels = data.reshape((-1, *data.shape[-3:]))
    voxels = int(np.prod(out_shape))
    resampled = []
    for channel_index, channel in enumerate(channels):
        channel_ops = None
        if ops is not None:
            # each channel draws its own stretch of the noise stream, as the separate
            # noise node would on the stacked array
            channel_ops = VoxelOps(**{**ops.__dict__, "first_index": channel_index * voxels})
        resampled.append(
            resample(
                channel,
                np.array(source.spec.roi.begin),
                np.array(source.spec.voxel_size),
                np.array(spec.roi.begin),
                np.array(spec.voxel_size),
                out_shape,
                transform,
                linear,
                channel_ops,
            )
        )
    out = resampled[0] if len(resampled) == 1 else np.stack(resampled)
    return out.reshape((*data.shape[:-3], *out_shape))
