"""Assembly of the training batch-provider graph.

Graph, per dataset and then shared::

    ZarrSource(raw, padded) + ZarrSource(gt, padded) + mask source  -> MergeProvider
      -> MaskedRandomLocation -> Normalize(raw) -> augments, in config order
      -> fixed intensity maps (``input.intensity_maps``)
    (one branch per dataset) -> WeightedChoice -> task target and weights -> MinMaskedReject

With ``fuse_augments`` (the default), an elastic augment and the mirror/transpose,
intensity and noise augments right after it run as one ``FusedAugment``: one resampling
pass that also normalises raw (replacing ``Normalize`` when the elastic augment comes
first). Each augment config still emits its own node; the fused node is built from them.

A ``TrainingPipeline`` is plain picklable data (configs, paths and sampling maps). Each loader
worker calls ``build()`` once and then ``request_sample()`` for every sample it produces.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate, Roi

from voltrain.augments.base import AugmentConfig
from voltrain.data import (
    DatasetConfig,
    TrainingVolume,
    check_output_voxel_size,
    open_volume,
    raw_roi_for_training,
)
from voltrain.errors import ConfigError, DataError, unwrap_voltrain_errors
from voltrain.inference import IntensityMap, intensity_map_nodes
from voltrain.kernels.chunk_cache import ChunkCache
from voltrain.models.base import ModelConfig
from voltrain.nodes.elastic_augment import ElasticAugment
from voltrain.nodes.fused_augment import FusedAugment
from voltrain.nodes.intensity_augment import IntensityAugment
from voltrain.nodes.masked_random_location import MaskedRandomLocation
from voltrain.nodes.min_masked_reject import MinMaskedReject
from voltrain.nodes.mirror_transpose_augment import MirrorTransposeAugment
from voltrain.nodes.noise_augment import NoiseAugment
from voltrain.nodes.roi_mask_source import RoiMaskSource
from voltrain.nodes.weighted_choice import WeightedChoice
from voltrain.nodes.zarr_source import ZarrSource
from voltrain.profiling import profiling_enabled, stage_ms
from voltrain.sampling import SamplingMap, compute_sampling_map
from voltrain.tasks.base import TaskConfig

MIB = 2**20
# Enough for the decoded chunks that a training region of ~300^3 voxels (uint8 raw, uint64
# labels, uint8 mask) spans; bigger regions work too, with fewer cache hits.
DEFAULT_CHUNK_CACHE_MB = 256.0


@dataclass(frozen=True)
class PipelineKeys:
    """The array keys of a training sample."""

    raw: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("RAW"))
    gt: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("GT"))
    mask: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("MASK"))
    target: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("TARGET"))
    weight: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("WEIGHT"))
    location: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("LOCATION"))
    raw_source: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("RAW_SOURCE"))
    raw_map: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("RAW_MAP"))


def open_training_volumes(
    datasets: Sequence[DatasetConfig],
    output_shape: Coordinate,
    key: str = "data.train",
    model: ModelConfig | None = None,
) -> list[TrainingVolume]:
    """Open and check every dataset; they must share voxel sizes and raw's channel count.

    With ``model``, the network's output voxel size must also be each gt's.
    """
    volumes = []
    for i, config in enumerate(datasets):
        volume = open_volume(config, f"{key}[{i}]", output_shape)
        if model is not None:
            check_output_voxel_size(volume, config, f"{key}[{i}]", model)
        volumes.append(volume)
    first = volumes[0]
    for i, volume in enumerate(volumes[1:], start=1):
        if volume.voxel_size != first.voxel_size:
            raise DataError(
                f"{key}[{i}]: voxel_size {tuple(volume.voxel_size)} differs from "
                f"{key}[0]'s {tuple(first.voxel_size)}; all datasets must share one"
            )
        if volume.raw_channels != first.raw_channels:
            raise DataError(
                f"{key}[{i}].raw: '{datasets[i].raw}' has {volume.raw_channels} channels, "
                f"{key}[0].raw has {first.raw_channels}; all datasets must have as many"
            )
    return volumes


@dataclass
class TrainingPipeline:
    """Everything a loader worker needs to build the training graph and draw samples.

    Attributes:
        datasets: the training datasets (absolute paths).
        augments: augment configs, applied in order.
        task: the task config (builds targets and weights).
        input_shape: network input, in raw's voxels.
        output_shape: network output, in gt's voxels (coarser than raw's with the U-Net's
            ``output_downsample``); each sample's output region starts on gt's grid.
        min_masked: the minimum masked fraction of each sample's output region.
        clip_raw: read raw only within the gt ROI plus the network context.
        sampling_maps: one per dataset, from ``compute_sampling_maps``.
        max_attempts: samples drawn per request before a ``SamplingError``.
        normalize_factor: raw is multiplied by it; None picks 1/255 for uint8 etc.
        intensity_maps: fixed maps applied to raw after the augments (``input``).
        fuse_augments: run an elastic augment and the mirror/transpose, intensity and
            noise augments that directly follow it as one ``FusedAugment``.
        chunk_cache_mb: MiB of decoded zarr chunks each loader worker keeps; 0 decodes
            every read afresh.
        deform_on_device: leave raw's resampling to the training device: samples hold
            ``raw_source`` and ``raw_map`` instead of ``raw``, which
            ``voltrain.kernels.torch_deform.deform_raw`` turns into raw there. Needs the
            augments to be one fusable run (elastic, then simple, intensity, noise).
    """

    datasets: list[DatasetConfig]
    augments: list[AugmentConfig]
    task: TaskConfig
    input_shape: Coordinate
    output_shape: Coordinate
    min_masked: float
    clip_raw: bool
    sampling_maps: list[SamplingMap]
    max_attempts: int = 100
    normalize_factor: float | None = None
    intensity_maps: list[IntensityMap] = field(default_factory=list)
    keys: PipelineKeys = field(default_factory=PipelineKeys)
    fuse_augments: bool = True
    chunk_cache_mb: float = DEFAULT_CHUNK_CACHE_MB
    deform_on_device: bool = False

    def __post_init__(self):
        self._pipeline: gp.Pipeline | None = None
        self._voxel_size: Coordinate | None = None
        self._raw_voxel_size: Coordinate | None = None
        self._chunk_cache: ChunkCache | None = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pipeline"] = None
        state["_chunk_cache"] = None
        return state

    def build(self) -> None:
        """Open the volumes and build and set up the graph (once per process)."""
        if self._pipeline is not None:
            return
        volumes = open_training_volumes(self.datasets, self.output_shape)
        self._voxel_size = volumes[0].voxel_size
        self._raw_voxel_size = volumes[0].raw_voxel_size
        if self.deform_on_device and volumes[0].raw_channels > 1:
            raise ConfigError(
                "trainer.deform_on_device: resamples single-channel raw only; "
                f"data.train[0].raw '{self.datasets[0].raw}' has "
                f"{volumes[0].raw_channels} channels"
            )
        if self.chunk_cache_mb > 0:
            self._chunk_cache = ChunkCache(int(self.chunk_cache_mb * MIB))
        branches = tuple(self._dataset_branch(i, v) for i, v in enumerate(volumes))
        names = ", ".join(v.name for v in volumes)
        pipeline = branches + WeightedChoice([v.weight for v in volumes])
        pipeline += self.task.build().target_node(
            self.keys.gt, self.keys.mask, self.keys.target, self.keys.weight
        )
        pipeline += MinMaskedReject(
            self.keys.mask,
            self.min_masked,
            max_attempts=self.max_attempts,
            description=f"dataset(s) {names}",
        )
        with unwrap_voltrain_errors():
            pipeline.setup()
        self._pipeline = pipeline

    def _dataset_branch(self, index: int, volume: TrainingVolume) -> gp.Pipeline:
        keys = self.keys
        voxel_size = volume.voxel_size
        context = self._context(volume.raw_voxel_size, voxel_size)
        raw_roi = raw_roi_for_training(volume, context, self.clip_raw)
        cache = self._chunk_cache
        sources = [
            ZarrSource(keys.raw, volume.raw, raw_roi, interpolatable=True, chunk_cache=cache),
            ZarrSource(keys.gt, volume.gt, interpolatable=False, chunk_cache=cache),
        ]
        sources.append(mask_source(keys.mask, volume, volume.gt.roi, cache))
        branch = tuple(sources) + gp.MergeProvider()
        branch += MaskedRandomLocation(
            keys.mask, self.sampling_maps[index], keys.location, dataset_index=index
        )
        device_keys = (keys.raw_source, keys.raw_map) if self.deform_on_device else None
        nodes = augment_nodes(
            self.augments, keys, self.fuse_augments, self.normalize_factor, device_keys
        )
        for node in nodes + intensity_map_nodes(keys.raw, self.intensity_maps):
            branch += node
        return branch

    def _context(self, raw_voxel_size: Coordinate, voxel_size: Coordinate) -> Coordinate:
        """World units raw reaches beyond the output region on each side."""
        raw_size = self.input_shape * raw_voxel_size
        crop = (raw_size - self.output_shape * voxel_size) / raw_voxel_size  # raw voxels
        # on raw's grid: an odd crop leaves its extra voxel beyond the output's far side
        return (crop / 2) * raw_voxel_size

    def sample_request(self, seed: int) -> gp.BatchRequest:
        """A request for one sample centred near the origin; the location node moves it.

        The output region starts on gt's grid (``voxel_size``), raw's on raw's grid.
        """
        voxel_size = self._voxel_size
        raw_voxel_size = self._raw_voxel_size
        out_offset = -(self.output_shape // 2) * voxel_size
        raw_offset = out_offset - self._context(raw_voxel_size, voxel_size)
        output_roi = Roi(out_offset, self.output_shape * voxel_size)
        request = gp.BatchRequest(random_seed=seed)
        raw_roi = Roi(raw_offset, self.input_shape * raw_voxel_size)
        request[self.keys.raw] = gp.ArraySpec(roi=raw_roi)
        for key in (self.keys.gt, self.keys.mask, self.keys.target, self.keys.weight):
            request[key] = gp.ArraySpec(roi=output_roi)
        request[self.keys.location] = gp.ArraySpec(nonspatial=True)
        if self.deform_on_device:
            request[self.keys.raw_source] = gp.ArraySpec(nonspatial=True)
            request[self.keys.raw_map] = gp.ArraySpec(nonspatial=True)
        return request

    def request_sample(self, seed: int) -> dict[str, np.ndarray]:
        """Draw one sample: raw (c, z, y, x), gt, mask, target, weight, location, timings.

        ``voxel_size`` is gt's (the output's), ``raw_voxel_size`` raw's.
        """
        self.build()
        start = time.perf_counter()
        with unwrap_voltrain_errors():
            batch = self._pipeline.request_batch(self.sample_request(seed))
        seconds = time.perf_counter() - start
        keys = self.keys
        location = batch[keys.location].data
        output_roi = batch[keys.gt].spec.roi
        raw_roi = batch[keys.raw].spec.roi
        # World offsets of the arrays in the source volume (exact for unaugmented samples).
        shift = Coordinate(location[1:])
        raw = batch[keys.raw].data
        sample = {
            "raw": (raw[np.newaxis] if raw.ndim == 3 else raw).astype(np.float32, copy=False),
            "gt": batch[keys.gt].data.astype(np.int64, copy=False),
            "mask": batch[keys.mask].data.astype(np.float32, copy=False),
            "target": batch[keys.target].data.astype(np.float32, copy=False),
            "weight": batch[keys.weight].data.astype(np.float32, copy=False),
            "dataset_index": np.int64(location[0]),
            "raw_offset": np.asarray(raw_roi.offset + shift, dtype=np.int64),
            "output_offset": np.asarray(output_roi.offset + shift, dtype=np.int64),
            "voxel_size": np.asarray(self._voxel_size, dtype=np.int64),
            "raw_voxel_size": np.asarray(self._raw_voxel_size, dtype=np.int64),
            "sample_seconds": np.float64(seconds),
        }
        if self.deform_on_device:
            del sample["raw"]
            sample["raw_source"] = batch[keys.raw_source].data
            sample["raw_map"] = batch[keys.raw_map].data
        if profiling_enabled():
            sample["stage_ms"] = stage_ms(batch, seconds)
        return sample

    def teardown(self) -> None:
        if self._pipeline is not None:
            self._pipeline.internal_teardown()
            self._pipeline = None
        self._chunk_cache = None


def mask_source(
    key: gp.ArrayKey, volume: TrainingVolume, labeled_roi: Roi, cache: ChunkCache | None
) -> gp.BatchProvider:
    """The source of a volume's mask within ``labeled_roi`` (the region its labels, or for
    unlabeled data its raw, cover); without a mask, 1 everywhere in that region."""
    if volume.mask is None:
        return RoiMaskSource(key, labeled_roi, volume.voxel_size)
    mask_roi = volume.mask.roi.intersect(labeled_roi)
    return ZarrSource(key, volume.mask, mask_roi, interpolatable=False, chunk_cache=cache)


def augment_nodes(
    augments: Sequence[AugmentConfig],
    keys: PipelineKeys,
    fuse: bool = True,
    normalize_factor: float | None = None,
    device_keys: tuple[gp.ArrayKey, gp.ArrayKey] | None = None,
) -> list[gp.BatchFilter]:
    """The nodes that normalise and augment raw, gt and mask, in config order.

    Each config emits its node. With ``fuse``, every ElasticAugment and the
    MirrorTransposeAugment, IntensityAugment and NoiseAugment directly after it (in that
    order, each optional) become one ``FusedAugment``; the first one, when it leads,
    normalises raw itself. Otherwise ``gp.Normalize`` comes first. ``device_keys``
    (raw source and raw map) leave raw's resampling to the training device.
    """
    nodes = [augment.node(keys.raw, keys.gt, keys.mask) for augment in augments]
    if device_keys is not None:
        return [_device_fused(nodes, keys, fuse, normalize_factor, device_keys)]
    out: list[gp.BatchFilter] = []
    index = 0
    while index < len(nodes):
        node = nodes[index]
        if fuse and type(node) is ElasticAugment and node.raw_key == keys.raw:
            parts, index = _fusable_run(nodes, index + 1, node)
            out.append(
                FusedAugment(node, *parts, normalize=not out, normalize_factor=normalize_factor)
            )
            continue
        if not out:
            out.append(gp.Normalize(keys.raw, factor=normalize_factor))
        out.append(node)
        index += 1
    if not out:
        out.append(gp.Normalize(keys.raw, factor=normalize_factor))
    return out


def check_deform_on_device(augments: Sequence[AugmentConfig], fuse: bool) -> None:
    """``ConfigError`` unless ``augments`` can run as the one fused pass that
    ``deform_on_device`` needs (checked when the config is read, before anything is
    written; the same rule ``augment_nodes`` applies)."""
    keys = PipelineKeys()
    augment_nodes(augments, keys, fuse, None, (keys.raw_source, keys.raw_map))


def _device_fused(nodes, keys, fuse, normalize_factor, device_keys) -> FusedAugment:
    parts, end = ([], 0)
    if fuse and nodes and type(nodes[0]) is ElasticAugment:
        parts, end = _fusable_run(nodes, 1, nodes[0])
    if end == 0 or end != len(nodes):
        raise ConfigError(
            "trainer.deform_on_device needs trainer.augments to be an elastic augment, "
            "optionally followed by simple, intensity and noise (in that order), and "
            "fuse_augments on"
        )
    return FusedAugment(
        nodes[0],
        *parts,
        normalize=True,
        normalize_factor=normalize_factor,
        raw_source_key=device_keys[0],
        raw_map_key=device_keys[1],
    )


def _fusable_run(nodes: list, index: int, elastic: ElasticAugment) -> tuple[list, int]:
    """The mirror, intensity and noise nodes (or None) fusable after ``elastic``."""
    parts = []
    for kind in (MirrorTransposeAugment, IntensityAugment, NoiseAugment):
        node = nodes[index] if index < len(nodes) else None
        if type(node) is kind and _acts_on(node, elastic):
            parts.append(node)
            index += 1
        else:
            parts.append(None)
    return parts, index


def _acts_on(node: gp.BatchFilter, elastic: ElasticAugment) -> bool:
    """Whether ``node`` changes exactly the arrays the fused pass resamples."""
    if isinstance(node, MirrorTransposeAugment):
        return set(node.keys) == set(elastic.keys)
    return node.raw_key == elastic.raw_key


def compute_sampling_maps(
    volumes: Sequence[TrainingVolume], output_shape: Coordinate, min_masked: float
) -> list[SamplingMap]:
    """The sampling map of each volume; raises ``SamplingError`` if one cannot reach it."""
    return [
        compute_sampling_map(volume, output_shape * volume.voxel_size, min_masked)
        for volume in volumes
    ]
