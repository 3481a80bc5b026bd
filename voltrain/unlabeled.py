"""Samples of unlabeled raw for semi-supervised training: two views of one location.

Graph, per dataset and then shared::

    ZarrSource(raw -> RAW) + ZarrSource(raw -> RAW_STRONG) + mask source -> MergeProvider
      -> MaskedRandomLocation -> Normalize(RAW, RAW_STRONG)
      -> the raw-only augments, on RAW_STRONG alone -> fixed intensity maps on both
    (one branch per dataset) -> WeightedChoice

Both arrays are read at the same location from the same volume, one voxel larger than the
network input on the low side of every axis. The weak view (``raw``, the teacher's input)
is the input window itself. The strong view (the student's input) is then mirrored and
transposed outside the graph, with parameters drawn from the sample's seed, so that the
student's output covers exactly the teacher's output region, voxel for voxel:

- transposing axes of equal input shape maps the (centred) output region onto itself;
- mirroring axis ``a`` reflects the window about its centre; when the network's context
  is odd, the output region sits one voxel off-centre (``TrainingPipeline._context``
  puts the extra voxel on the far side), so the mirrored window starts one voxel lower,
  in the extra voxel read on the low side, which puts the reflected output region back
  onto the teacher's.

``voltrain.trainers.consistency.undo_view`` undoes the transform on the student's output.
A ``UnlabeledPipeline`` is plain picklable data, drawn from by the same seeded
multiprocess loader (``voltrain.loader.make_loader``) as the labeled samples.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate, Roi

from voltrain.augments.base import AugmentConfig
from voltrain.data import TrainingVolume, UnlabeledDatasetConfig, as_mask, open_array
from voltrain.errors import ConfigError, DataError, unwrap_voltrain_errors
from voltrain.inference import IntensityMap, intensity_map_nodes
from voltrain.kernels.augment_rng import augment_rng
from voltrain.kernels.chunk_cache import ChunkCache
from voltrain.nodes.masked_random_location import MaskedRandomLocation
from voltrain.nodes.mirror_transpose_augment import (
    MirrorTransposeAugment,
    MirrorTransposeParams,
    check_transpose_voxel_sizes,
)
from voltrain.nodes.raw_intensity_augment import RawIntensityAugment
from voltrain.nodes.weighted_choice import WeightedChoice
from voltrain.nodes.zarr_source import ZarrSource
from voltrain.pipeline import MIB, mask_source
from voltrain.sampling import SamplingMap, compute_sampling_map

# the random stream of the transform between the two views (see augment_rng)
VIEW_RNG_STREAM = "semi_views"


@dataclass(frozen=True)
class UnlabeledKeys:
    """The array keys of an unlabeled sample."""

    raw: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("UNLABELED_RAW"))
    strong: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("UNLABELED_STRONG"))
    mask: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("UNLABELED_MASK"))
    location: gp.ArrayKey = field(default_factory=lambda: gp.ArrayKey("UNLABELED_LOCATION"))


def changes_raw_only(node: gp.BatchFilter) -> bool:
    """Whether an augment's node changes raw's values and nothing else (no geometry, no
    labels): those make the strong view. A node class outside ``RawIntensityAugment``
    says so with a ``changes_raw_only = True`` attribute."""
    return isinstance(node, RawIntensityAugment) or bool(getattr(node, "changes_raw_only", False))


def strong_view_augments(augments: Sequence[AugmentConfig]) -> list[AugmentConfig]:
    """The augments of the strong view: those that change raw only, except the fixed
    ``intensity_scale_shift`` maps with ``p: 1``, which both views get."""
    keys = UnlabeledKeys()
    chosen = []
    for augment in augments:
        if augment.type == "intensity_scale_shift" and augment.p >= 1:
            continue
        if changes_raw_only(augment.node(keys.strong, keys.raw, keys.mask)):
            chosen.append(augment)
    return chosen


def open_unlabeled_volumes(
    datasets: Sequence[UnlabeledDatasetConfig], voxel_size: Coordinate
) -> list[TrainingVolume]:
    """Open and check ``data.unlabeled``: raw's voxel size must be ``voxel_size`` (the
    labeled raw's), a mask's must be raw's.

    The volume's grid (``gt`` of the returned ``TrainingVolume``) is raw itself: samples
    are placed where the mask, or raw's ROI, covers their output region.
    """
    volumes = []
    for index, config in enumerate(datasets):
        where = f"data.unlabeled[{index}]"
        raw = open_array(config.raw, f"{where}.raw", channels=True)
        if raw.voxel_size != voxel_size:
            raise DataError(
                f"{where}.raw: voxel_size {tuple(raw.voxel_size)} ('{config.raw}') differs "
                f"from data.train's raw voxel_size {tuple(voxel_size)}; they must be equal"
            )
        mask = None
        if config.mask is not None:
            mask = as_mask(open_array(config.mask, f"{where}.mask"))
            if mask.voxel_size != raw.voxel_size:
                raise DataError(
                    f"{where}.mask: voxel_size {tuple(mask.voxel_size)} ('{config.mask}') "
                    f"differs from raw's {tuple(raw.voxel_size)}; they must be equal"
                )
        name = config.name or where
        volumes.append(TrainingVolume(name, raw, raw, mask, config.weight))
    return volumes


def compute_unlabeled_sampling_maps(
    volumes: Sequence[TrainingVolume], output_shape: Coordinate, min_masked: float
) -> list[SamplingMap]:
    """Where output regions have at least ``min_masked`` of their voxels within the mask
    (or raw's ROI); raises ``SamplingError`` naming the dataset when none does."""
    return [compute_sampling_map(v, output_shape * v.voxel_size, min_masked) for v in volumes]


@dataclass
class UnlabeledPipeline:
    """Everything a loader worker needs to draw unlabeled samples (weak and strong views).

    Attributes:
        datasets: the unlabeled datasets (absolute paths).
        augments: the strong view's raw-only augments (``strong_view_augments``).
        input_shape: network input in voxels.
        output_shape: network output in voxels.
        voxel_size: raw's voxel size, the network's output voxel size.
        sampling_maps: one per dataset (``compute_unlabeled_sampling_maps``).
        view_transform: draws the mirror and transposition between the views (its
            ``make_params``); None: the views share their geometry.
        normalize_factor: raw is multiplied by it; None picks 1/255 for uint8 etc.
        intensity_maps: fixed maps applied to both views after the augments.
        max_attempts: draws of a sample past unreadable chunks (``on_data_error: skip``).
        chunk_cache_mb: MiB of decoded chunks each worker keeps.
    """

    datasets: list[UnlabeledDatasetConfig]
    augments: list[AugmentConfig]
    input_shape: Coordinate
    output_shape: Coordinate
    voxel_size: Coordinate
    sampling_maps: list[SamplingMap]
    view_transform: MirrorTransposeAugment | None = None
    normalize_factor: float | None = None
    intensity_maps: list[IntensityMap] = field(default_factory=list)
    max_attempts: int = 100
    chunk_cache_mb: float = 0.0
    keys: UnlabeledKeys = field(default_factory=UnlabeledKeys)

    def __post_init__(self):
        self._pipeline: gp.Pipeline | None = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pipeline"] = None
        return state

    def check_view_transform(self) -> None:
        """``ConfigError`` unless transposed axes share input shape and voxel size."""
        if self.view_transform is None:
            return
        axes = self.view_transform.transpose_axes
        axes = list(range(3)) if axes is None else axes
        check_transpose_voxel_sizes({self.keys.raw: self.voxel_size}, axes)
        if len({self.input_shape[a] for a in axes}) > 1:
            raise ConfigError(
                f"trainer.view_transform.transpose_axes {axes}: trainer.input_shape "
                f"{list(self.input_shape)} differs between these axes, so the views could not "
                "be transposed onto each other"
            )

    def build(self) -> None:
        """Open the volumes and build and set up the graph (once per process)."""
        if self._pipeline is not None:
            return
        volumes = open_unlabeled_volumes(self.datasets, self.voxel_size)
        cache = ChunkCache(int(self.chunk_cache_mb * MIB)) if self.chunk_cache_mb > 0 else None
        branches = tuple(self._branch(i, v, cache) for i, v in enumerate(volumes))
        pipeline = branches + WeightedChoice([v.weight for v in volumes])
        with unwrap_voltrain_errors():
            pipeline.setup()
        self._pipeline = pipeline

    def _branch(self, index: int, volume: TrainingVolume, cache) -> gp.Pipeline:
        keys = self.keys
        sources = [
            ZarrSource(keys.raw, volume.raw, interpolatable=True, chunk_cache=cache),
            ZarrSource(keys.strong, volume.raw, interpolatable=True, chunk_cache=cache),
        ]
        sources.append(mask_source(keys.mask, volume, volume.raw.roi, cache))
        branch = tuple(sources) + gp.MergeProvider()
        branch += MaskedRandomLocation(keys.mask, self.sampling_maps[index], keys.location, index)
        branch += gp.Normalize(keys.raw, factor=self.normalize_factor)
        branch += gp.Normalize(keys.strong, factor=self.normalize_factor)
        for augment in self.augments:
            branch += augment.node(keys.strong, keys.raw, keys.mask)
        for raw_key in (keys.raw, keys.strong):
            for node in intensity_map_nodes(raw_key, self.intensity_maps):
                branch += node
        return branch

    def context(self) -> tuple[Coordinate, Coordinate]:
        """Input voxels before and after the output region on each axis (the far side
        gets the extra voxel of an odd context, as in the labeled pipeline)."""
        crop = self.input_shape - self.output_shape
        before = crop / 2
        return before, crop - before

    def sample_request(self, seed: int) -> gp.BatchRequest:
        """A request for the window (input plus one voxel below) and the output's mask."""
        voxel_size = self.voxel_size
        before, _ = self.context()
        out_offset = -(self.output_shape // 2) * voxel_size
        window_offset = out_offset - (before + 1) * voxel_size
        window = Roi(window_offset, (self.input_shape + 1) * voxel_size)
        request = gp.BatchRequest(random_seed=seed)
        request[self.keys.raw] = gp.ArraySpec(roi=window)
        request[self.keys.strong] = gp.ArraySpec(roi=window)
        request[self.keys.mask] = gp.ArraySpec(roi=Roi(out_offset, self.output_shape * voxel_size))
        request[self.keys.location] = gp.ArraySpec(nonspatial=True)
        return request

    def view_params(self, seed: int) -> MirrorTransposeParams:
        """The transform of the strong view relative to the weak one, for ``seed``."""
        if self.view_transform is None:
            return MirrorTransposeParams(apply=False, mirror=(False,) * 3, transpose=(0, 1, 2))
        return self.view_transform.make_params(augment_rng(seed, VIEW_RNG_STREAM), 3)

    def request_sample(self, seed: int) -> dict[str, np.ndarray]:
        """Draw one sample: ``raw`` (weak view) and ``strong`` (c, z, y, x), the output
        region's ``mask``, the view transform (``mirror``, ``transpose``) and placement."""
        self.build()
        start = time.perf_counter()
        with unwrap_voltrain_errors():
            batch = self._pipeline.request_batch(self.sample_request(seed))
        keys = self.keys
        params = self.view_params(seed)
        if not params.apply:
            params = MirrorTransposeParams(True, (False,) * 3, (0, 1, 2))
        weak = _with_channels(batch[keys.raw].data)[(slice(None),) + (slice(1, None),) * 3]
        strong = self._strong_view(_with_channels(batch[keys.strong].data), params)
        location = batch[keys.location].data
        shift = Coordinate(location[1:])
        window = batch[keys.raw].spec.roi
        raw_offset = window.offset + self.voxel_size + shift
        output_offset = batch[keys.mask].spec.roi.offset + shift
        return {
            "raw": weak.astype(np.float32, copy=False),
            "strong": strong.astype(np.float32, copy=False),
            "mask": batch[keys.mask].data.astype(np.float32, copy=False),
            "mirror": np.asarray(params.mirror, dtype=np.int64),
            "transpose": np.asarray(params.transpose, dtype=np.int64),
            "dataset_index": np.int64(location[0]),
            "raw_offset": np.asarray(raw_offset, dtype=np.int64),
            "output_offset": np.asarray(output_offset, dtype=np.int64),
            "voxel_size": np.asarray(self.voxel_size, dtype=np.int64),
            "raw_voxel_size": np.asarray(self.voxel_size, dtype=np.int64),
            "sample_seconds": np.float64(time.perf_counter() - start),
        }

    def _strong_view(self, window: np.ndarray, params: MirrorTransposeParams) -> np.ndarray:
        """The input window of the student, mirrored and transposed (see the module)."""
        before, after = self.context()
        crop = [slice(None)]
        for axis in range(3):
            start = 1 - (after[axis] - before[axis]) if params.mirror[axis] else 1
            crop.append(slice(start, start + self.input_shape[axis]))
        data = window[tuple(crop)]
        if self.view_transform is None:
            return np.ascontiguousarray(data)
        return self.view_transform.apply_transform(data, params)

    def teardown(self) -> None:
        if self._pipeline is not None:
            self._pipeline.internal_teardown()
            self._pipeline = None


def _with_channels(data: np.ndarray) -> np.ndarray:
    return data[np.newaxis] if data.ndim == 3 else data
