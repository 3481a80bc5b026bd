"""Move each request to a random location where enough of the output is masked."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate
from gunpowder.profiling import Timing

from voltrain.sampling import SamplingMap


class MaskedRandomLocation(gp.BatchFilter):
    """Shift each request so that its output region is centred on a valid location.

    The location is drawn from a precomputed ``SamplingMap`` (block-aligned output boxes
    whose masked fraction reaches ``min_masked``), so no data is read for locations that
    would be rejected and the draw never loops. The output region is the centre of the
    request's ``mask_key`` ROI, which stays centred even when augments downstream enlarge
    the request. The batch is shifted back to the requested ROIs, and the world position of
    the output centre is provided as a non-spatial int64 array under ``location_key``
    (``[dataset_index, z, y, x]``) so that snapshots can place samples in world coordinates.

    Args:
        mask_key: the mask array; its requested ROI's centre is the output centre.
        sampling_map: where valid output centres lie.
        location_key: the non-spatial array to record the dataset index and world shift in.
        dataset_index: the index of this dataset among the training datasets.
    """

    def __init__(
        self,
        mask_key: gp.ArrayKey,
        sampling_map: SamplingMap,
        location_key: gp.ArrayKey,
        dataset_index: int = 0,
    ):
        self.mask_key = mask_key
        self.sampling_map = sampling_map
        self.location_key = location_key
        self.dataset_index = dataset_index
        self._shift: Coordinate | None = None

    def setup(self):
        self.provides(self.location_key, gp.ArraySpec(nonspatial=True, dtype=np.int64))

    def provide(self, request: gp.BatchRequest) -> gp.Batch:
        # BatchFilter.provide would merge the shifted request into the original one (the
        # union of both ROIs), making the sources read everything between the origin and
        # the drawn location. Shifting is all this node does, so it sends only the shifted
        # request upstream.
        prepare_timing = Timing(self, "prepare")
        prepare_timing.start()
        upstream_request = self.prepare(request)
        prepare_timing.stop()
        batch = self.get_upstream_provider().request_batch(upstream_request)
        process_timing = Timing(self, "process")
        process_timing.start()
        outputs = self.process(batch, request)
        process_timing.stop()
        outputs.profiling_stats = batch.profiling_stats
        outputs.profiling_stats.add(prepare_timing)
        outputs.profiling_stats.add(process_timing)
        return outputs

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        rng = np.random.default_rng(request.random_seed)
        voxel_size = self.spec[self.mask_key].voxel_size
        center = self.sampling_map.draw_center(rng, voxel_size)
        requested_center = request[self.mask_key].roi.center
        self._shift = ((center - requested_center) / voxel_size) * voxel_size
        deps = gp.BatchRequest(random_seed=request.random_seed)
        for key, spec in request.items():
            if key == self.location_key:
                continue
            shifted = spec.copy()
            shifted.roi = spec.roi.shift(self._shift)
            deps[key] = shifted
        return deps

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch:
        outputs = gp.Batch()
        for key, array in batch.arrays.items():
            if key not in request or array.spec.nonspatial:
                continue
            spec = array.spec.copy()
            spec.roi = spec.roi.shift(-self._shift)
            outputs[key] = gp.Array(array.data, spec)
        location = np.array([self.dataset_index, *self._shift], dtype=np.int64)
        outputs[self.location_key] = gp.Array(
            location, gp.ArraySpec(nonspatial=True, dtype=np.int64)
        )
        return outputs
