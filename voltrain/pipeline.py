"""Assembly of the training batch-provider graph.

Graph, per dataset and then shared::

    ZarrSource(raw, padded) + ZarrSource(gt, padded) + mask source  -> MergeProvider
      -> Normalize(raw) -> MaskedRandomLocation -> augments, in config order
    (one branch per dataset) -> WeightedChoice -> task target and weights -> MinMaskedReject

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
from voltrain.data import DatasetConfig, TrainingVolume, open_volume, raw_roi_for_training
from voltrain.errors import DataError, unwrap_voltrain_errors
from voltrain.nodes.masked_random_location import MaskedRandomLocation
from voltrain.nodes.min_masked_reject import MinMaskedReject
from voltrain.nodes.roi_mask_source import RoiMaskSource
from voltrain.nodes.weighted_choice import WeightedChoice
from voltrain.nodes.zarr_source import ZarrSource
from voltrain.sampling import SamplingMap, compute_sampling_map
from voltrain.tasks.base import TaskConfig


@dataclass(frozen=True)
class PipelineKeys:
    """The array keys of a training sample."""

    raw: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("RAW"))
    gt: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("GT"))
    mask: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("MASK"))
    target: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("TARGET"))
    weight: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("WEIGHT"))
    location: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("LOCATION"))


def open_training_volumes(
    datasets: Sequence[DatasetConfig], output_shape: Coordinate, key: str = "data.train"
) -> list[TrainingVolume]:
    """Open and check every dataset; they must share one voxel size."""
    volumes = []
    for i, config in enumerate(datasets):
        volumes.append(open_volume(config, f"{key}[{i}]", output_shape))
    first = volumes[0]
    for i, volume in enumerate(volumes[1:], start=1):
        if volume.voxel_size != first.voxel_size:
            raise DataError(
                f"{key}[{i}]: voxel_size {tuple(volume.voxel_size)} differs from "
                f"{key}[0]'s {tuple(first.voxel_size)}; all datasets must share one"
            )
    return volumes


@dataclass
class TrainingPipeline:
    """Everything a loader worker needs to build the training graph and draw samples.

    Attributes:
        datasets: the training datasets (absolute paths).
        augments: augment configs, applied in order.
        task: the task config (builds targets and weights).
        input_shape: network input, voxels.
        output_shape: network output, voxels.
        min_masked: the minimum masked fraction of each sample's output region.
        clip_raw: read raw only within the gt ROI plus the network context.
        sampling_maps: one per dataset, from ``compute_sampling_maps``.
        max_attempts: samples drawn per request before a ``SamplingError``.
        normalize_factor: raw is multiplied by it; None picks 1/255 for uint8 etc.
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
    keys: PipelineKeys = field(default_factory=PipelineKeys)

    def __post_init__(self):
        self._pipeline: gp.Pipeline | None = None
        self._voxel_size: Coordinate | None = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pipeline"] = None
        return state

    def build(self) -> None:
        """Open the volumes and build and set up the graph (once per process)."""
        if self._pipeline is not None:
            return
        volumes = open_training_volumes(self.datasets, self.output_shape)
        self._voxel_size = volumes[0].voxel_size
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
        context = (self.input_shape - self.output_shape) * voxel_size / 2
        raw_roi = raw_roi_for_training(volume, context, self.clip_raw)
        sources = [
            ZarrSource(keys.raw, volume.raw, valid_roi=raw_roi, interpolatable=True),
            ZarrSource(keys.gt, volume.gt, interpolatable=False),
        ]
        if volume.mask is not None:
            mask_roi = volume.mask.roi.intersect(volume.gt.roi)
            sources.append(ZarrSource(keys.mask, volume.mask, mask_roi, interpolatable=False))
        else:
            sources.append(RoiMaskSource(keys.mask, volume.gt.roi, voxel_size))
        branch = tuple(sources) + gp.MergeProvider()
        branch += gp.Normalize(keys.raw, factor=self.normalize_factor)
        branch += MaskedRandomLocation(
            keys.mask, self.sampling_maps[index], keys.location, dataset_index=index
        )
        for augment in self.augments:
            branch += augment.node(keys.raw, keys.gt, keys.mask)
        return branch

    def sample_request(self, seed: int) -> gp.BatchRequest:
        """A request for one sample centred near the origin; the location node moves it."""
        voxel_size = self._voxel_size
        raw_offset = -(self.input_shape // 2) * voxel_size
        out_offset = raw_offset + (self.input_shape - self.output_shape) / 2 * voxel_size
        output_roi = Roi(out_offset, self.output_shape * voxel_size)
        request = gp.BatchRequest(random_seed=seed)
        request[self.keys.raw] = gp.ArraySpec(roi=Roi(raw_offset, self.input_shape * voxel_size))
        for key in (self.keys.gt, self.keys.mask, self.keys.target, self.keys.weight):
            request[key] = gp.ArraySpec(roi=output_roi)
        request[self.keys.location] = gp.ArraySpec(nonspatial=True)
        return request

    def request_sample(self, seed: int) -> dict[str, np.ndarray]:
        """Draw one sample: raw (1, z, y, x), gt, mask, target, weight, location, timings."""
        self.build()
        start = time.perf_counter()
        with unwrap_voltrain_errors():
            batch = self._pipeline.request_batch(self.sample_request(seed))
        keys = self.keys
        location = batch[keys.location].data
        output_roi = batch[keys.gt].spec.roi
        raw_roi = batch[keys.raw].spec.roi
        # World offsets of the arrays in the source volume (exact for unaugmented samples).
        shift = Coordinate(location[1:])
        return {
            "raw": batch[keys.raw].data[np.newaxis].astype(np.float32, copy=False),
            "gt": batch[keys.gt].data.astype(np.int64, copy=False),
            "mask": batch[keys.mask].data.astype(np.float32, copy=False),
            "target": batch[keys.target].data.astype(np.float32, copy=False),
            "weight": batch[keys.weight].data.astype(np.float32, copy=False),
            "dataset_index": np.int64(location[0]),
            "raw_offset": np.asarray(raw_roi.offset + shift, dtype=np.int64),
            "output_offset": np.asarray(output_roi.offset + shift, dtype=np.int64),
            "voxel_size": np.asarray(self._voxel_size, dtype=np.int64),
            "sample_seconds": np.float64(time.perf_counter() - start),
        }

    def teardown(self) -> None:
        if self._pipeline is not None:
            self._pipeline.internal_teardown()
            self._pipeline = None


def compute_sampling_maps(
    volumes: Sequence[TrainingVolume], output_shape: Coordinate, min_masked: float
) -> list[SamplingMap]:
    """The sampling map of each volume; raises ``SamplingError`` if one cannot reach it."""
    return [
        compute_sampling_map(volume, output_shape * volume.voxel_size, min_masked)
        for volume in volumes
    ]
