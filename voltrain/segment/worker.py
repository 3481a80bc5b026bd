"""The segmentation workers: one per stage, each a daisy worker function.

- ``fragments``: the block's affinities (and mask), with context → fragments, written
  with the block's ID offset;
- ``edges``: the block's fragments with a context of the largest offset and its
  affinities → the edges the block owns, saved as a table;
- ``relabel``: the block's fragments → one segmentation per threshold, through the lookup.
"""

from __future__ import annotations

import numpy as np
from funlib.geometry import Coordinate, Roi

from voltrain.blocks.record import block_name
from voltrain.segment.agglomerate import relabel
from voltrain.segment.blocks import block_index, id_offset
from voltrain.segment.fragments import block_fragments, fragment_window
from voltrain.segment.rag import block_edges, neighborhood_context
from voltrain.segment.spec import SegmentSpec
from voltrain.segment.store import SegmentStore
from voltrain.segment.window import ZarrWindow


class SegmentWorker:
    """daisy worker function (picklable) for one stage.

    Args:
        spec_json: the ``SegmentSpec`` as JSON.
        stage: ``fragments``, ``edges`` or ``relabel``.
    """

    def __init__(self, spec_json: str, stage: str):
        self.spec_json = spec_json
        self.stage = stage

    def __call__(self, *, context=None) -> None:
        import daisy.v2 as daisy

        from voltrain.blocks.serve import serve_blocks

        spec = SegmentSpec.model_validate_json(self.spec_json)
        context = daisy.Context.from_env() if context is None else context
        blocks = StageBlocks(spec)
        process = getattr(blocks, self.stage)
        serve_blocks(daisy.Client(context), blocks.store.records[self.stage], process)


class StageBlocks:
    """The per-block work of each stage over the spec's arrays (opened once per worker)."""

    def __init__(self, spec: SegmentSpec):
        self.spec = spec
        self.store = SegmentStore(spec.output)
        self.voxel_size = Coordinate(spec.voxel_size)
        self.affinities = ZarrWindow(spec.input, spec.roi_offset, spec.voxel_size)
        self.mask = ZarrWindow(spec.mask, spec.mask_offset, spec.voxel_size) if spec.mask else None
        self._lookup = None

    def _output(self, path: str) -> ZarrWindow:
        return ZarrWindow(path, self.spec.roi_offset, self.spec.voxel_size, mode="r+")

    def _inside(self, write_roi: Roi) -> Roi:
        return write_roi.intersect(self.spec.roi)

    def _read_affinities(self, roi: Roi) -> np.ndarray:
        data = self.affinities.read(roi)
        if self.spec.channels is not None:  # a multitask's prediction: its affinity channels
            data = data[self.spec.channels]
        data = data.astype(np.float32)
        return data * np.float32(self.spec.affinity_scale)

    def fragments(self, write_roi: Roi) -> None:
        roi = self._inside(write_roi)
        begin = (roi.begin - self.spec.roi.begin) / self.voxel_size
        index = block_index(begin, self.spec.volume_shape, self.spec.block_shape)
        low, high = fragment_window(
            begin,
            roi.shape / self.voxel_size,
            self.spec.volume_shape,
            self.spec.settings,
            self.spec.voxel_size,
        )
        window = Roi(Coordinate(low), Coordinate(high) - Coordinate(low)) * self.voxel_size
        window = window.shift(self.spec.roi.begin)
        crop = tuple(
            slice(b - lo, b - lo + s)
            for b, lo, s in zip(begin, low, roi.shape / self.voxel_size, strict=True)
        )
        fragments = block_fragments(
            self._read_affinities(window),
            self.spec.neighborhood,
            self.spec.settings,
            None if self.mask is None else self.mask.read(window),
            id_offset(index, self.spec.block_shape),
            self.spec.voxel_size,
            crop,
        )
        self._output(self.store.fragments).write(roi, fragments)
        self.store.records["fragments"].mark_done(write_roi)

    def edges(self, write_roi: Roi) -> None:
        roi = self._inside(write_roi)
        context = Coordinate(neighborhood_context(self.spec.neighborhood))
        grown = roi.grow(context * self.voxel_size, context * self.voxel_size)
        fragments = self._output(self.store.fragments).read(grown)
        pairs, stats = block_edges(
            fragments,
            self._read_affinities(roi),
            self.spec.neighborhood,
            tuple(context),
            self.spec.settings.score,
        )
        shape = roi.shape / self.voxel_size
        own = fragments[tuple(slice(c, c + s) for c, s in zip(context, shape, strict=True))]
        ids = np.unique(own)
        self.store.write_table(block_name(write_roi), ids[ids != 0], pairs, stats)
        self.store.records["edges"].mark_done(write_roi)

    def relabel(self, write_roi: Roi) -> None:
        if self._lookup is None:
            self._lookup = self.store.read_lookup()
        thresholds, fragment_ids, segment_ids = self._lookup
        roi = self._inside(write_roi)
        fragments = self._output(self.store.fragments).read(roi)
        for threshold, ids in zip(thresholds, segment_ids, strict=True):
            array = self._output(self.store.segmentation(threshold))
            array.write(roi, relabel(fragments, fragment_ids, ids))
        self.store.records["relabel"].mark_done(write_roi)
