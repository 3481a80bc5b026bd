"""Blockwise segmentation of a zarr volume of affinities: what ``voltrain segment`` does.

Three daisy stages and one step in the driver, each resumable (see ``store``):

1. ``fragments``: mutex-watershed fragments per block, IDs unique over the volume;
2. ``edges``: each block's share of the region graph (it reads its neighbours' fragments
   within the largest offset, so every stage-1 block must be done first);
3. the driver adds the blocks' edge tables and agglomerates the whole graph at every
   threshold; only this edge list, not the volume, is held in memory;
4. ``relabel``: every block's fragments become one segmentation per threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from funlib.geometry import Coordinate

from voltrain.blocks.record import block_name, tile_roi
from voltrain.blocks.run import BlockRunOptions, run_stage
from voltrain.segment.agglomerate import agglomerate
from voltrain.segment.rag import merge_edge_tables, neighborhood_context, stats_width
from voltrain.segment.spec import SegmentSpec
from voltrain.segment.store import SegmentStore
from voltrain.segment.worker import SegmentWorker


@dataclass
class SegmentationResult:
    """What a segmentation run produced and did.

    Attributes:
        outputs: threshold → segmentation array path.
        blocks: blocks per stage.
        fragments: fragments in the volume.
        edges: edges of the region graph.
        seconds: wall time of this run.
        voxels: voxels in the ROI.
    """

    outputs: dict[float, str]
    blocks: int
    fragments: int = 0
    edges: int = 0
    seconds: float = 0.0
    voxels: int = 0

    @property
    def voxels_per_second(self) -> float:
        return self.voxels / max(self.seconds, 1e-9)


def segment_blockwise(
    spec: SegmentSpec, options: BlockRunOptions, overwrite: bool = False
) -> SegmentationResult:
    """Run (or resume) the segmentation job ``spec``; everything was checked by the plan."""
    options.check()
    store = SegmentStore(spec.output)
    if Path(spec.output).exists() and not overwrite:
        store.check_resumable(spec)  # never replace what this command did not write
    else:
        store.create(spec)
    store.prepare_thresholds(spec)
    write_rois = tile_roi(spec.roi, spec.block_roi.shape)
    voxels = int(np.prod(spec.volume_shape))
    outputs = {t: store.segmentation(t) for t in spec.thresholds}
    result = SegmentationResult(outputs, len(write_rois), voxels=voxels)
    if store.is_complete():
        return result
    start = time.perf_counter()
    context = Coordinate(neighborhood_context(spec.neighborhood)) * Coordinate(spec.voxel_size)
    block = spec.block_roi
    stages = {
        "fragments": (spec.roi, (block, block)),
        "edges": (
            spec.roi.grow(context, context),
            (block.grow(context, context).shift(context), block.shift(context)),
        ),
    }
    for stage, (total_roi, block_rois) in stages.items():
        run_stage(
            f"voltrain_segment_{stage}",
            store.records[stage],
            spec.output,
            total_roi,
            block_rois,
            write_rois,
            SegmentWorker(spec.model_dump_json(), stage),
            options,
        )
    if not store.lookup_path.exists():
        result.fragments, result.edges = agglomerate_tables(spec, store, write_rois)
    run_stage(
        "voltrain_segment_relabel",
        store.records["relabel"],
        spec.output,
        spec.roi,
        (block, block),
        write_rois,
        SegmentWorker(spec.model_dump_json(), "relabel"),
        options,
    )
    store.update_record(complete=True)
    result.seconds = time.perf_counter() - start
    return result


def agglomerate_tables(spec: SegmentSpec, store: SegmentStore, write_rois) -> tuple[int, int]:
    """Add the blocks' edge tables (in block order), agglomerate, write the lookup."""
    tables, ids = [], []
    for roi in write_rois:
        block_ids, pairs, stats = store.read_table(block_name(roi))
        ids.append(block_ids)
        tables.append((pairs, stats))
    pairs, stats = merge_edge_tables(tables, stats_width(spec.settings.score))
    fragment_ids = np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.uint64)
    segments = agglomerate(
        fragment_ids.astype(np.uint64),
        pairs,
        stats,
        spec.thresholds,
        spec.settings.score,
        spec.settings.quantile,
    )
    store.write_lookup(fragment_ids, segments)
    return len(fragment_ids), len(pairs)


def segment(
    config_path: str,
    input: str,
    output: str,
    mask: str | None = None,
    thresholds: list[float] | None = None,
    block_shape: list[int] | None = None,
    options: BlockRunOptions | None = None,
    overwrite: bool = False,
) -> SegmentationResult:
    """Segment the affinities ``input`` with the experiment's neighbourhood and its
    ``segment:`` settings (``thresholds`` and ``block_shape`` override them)."""
    from voltrain.experiment import load_config
    from voltrain.segment.plan import plan_segmentation

    options = options or BlockRunOptions()
    options.check()
    config = load_config(config_path)
    spec = plan_segmentation(
        experiment_neighborhood(config, config_path),
        config.segment,
        input,
        output,
        mask,
        thresholds,
        block_shape,
        channels=config.task.affinity_channels(),
        num_channels=config.task.build().num_channels,
    )
    return segment_blockwise(spec, options, overwrite)


def experiment_neighborhood(config, config_path) -> list[list[int]]:
    """The affinity offsets of an experiment, or a ``ConfigError`` if it has none."""
    from voltrain.errors import ConfigError

    if not config.task.affinity_channels():
        raise ConfigError(
            f"{config_path}: task.type is {config.task.type!r}; segmentation needs an "
            "affinities task (task.neighborhood)"
        )
    return config.task.neighborhood
