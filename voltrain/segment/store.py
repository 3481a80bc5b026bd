"""The output group of ``voltrain segment`` and its resumable record.

For ``--output seg.zarr/seg``::

    seg.zarr/seg/                    group; attrs["voltrain_segment"] = {"complete": bool,
                                     "thresholds": [...], identity ...}
        fragments                    uint64 (z, y, x) fragments, unique IDs over the volume
        threshold_<t>                uint64 (z, y, x) segmentation at threshold t (e.g.
                                     threshold_0.5), 0 = background; one per threshold
    seg.zarr/seg.done/
        fragments/, edges/, relabel/ the BlockRecord of each stage (done markers, failures,
                                     worker logs; see voltrain.blocks.record)
        edges/tables/<z>_<y>_<x>.npz the edges each block owns: fragment pairs, statistics,
                                     and the block's fragment IDs
        lookup.npz                   fragment IDs and their segment ID at each threshold

Stages run in this order; each resumes from its markers after a kill. ``complete`` is true
only once every stage is done. A rerun with other thresholds keeps the fragments and edges
and redoes only the agglomeration and relabelling.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import zarr
from funlib.geometry import Coordinate

from voltrain.blocks.record import (
    BlockRecord,
    check_output_record,
    read_output_record,
    write_atomically,
)
from voltrain.segment.spec import SegmentSpec

RECORD_KEY = "voltrain_segment"
STAGES = ("fragments", "edges", "relabel")


def threshold_name(threshold: float) -> str:
    """The array name of one threshold's segmentation, e.g. ``threshold_0.5``."""
    return f"threshold_{threshold:.4f}".rstrip("0").rstrip(".")


class SegmentStore:
    """The output group, its arrays and the stage records (see the module docstring).

    Args:
        output: the output group path, ``container.zarr/name``.
    """

    def __init__(self, output: str):
        self.output = str(output)
        self.done_dir = Path(self.output + ".done")
        self.records = {stage: BlockRecord(self.done_dir / stage) for stage in STAGES}
        self.tables_dir = self.done_dir / "edges" / "tables"
        self.lookup_path = self.done_dir / "lookup.npz"

    @property
    def fragments(self) -> str:
        return f"{self.output}/fragments"

    def segmentation(self, threshold: float) -> str:
        return f"{self.output}/{threshold_name(threshold)}"

    def record(self) -> dict | None:
        """The ``voltrain_segment`` attribute of the group, or None."""
        return read_output_record(self.output, RECORD_KEY)

    def check_resumable(self, spec: SegmentSpec) -> None:
        """Raise ``ConfigError`` unless the existing output holds these very fragments."""
        check_output_record(self.output, self.record(), spec.identity(), "segmentation")

    def create(self, spec: SegmentSpec) -> None:
        """Create the group, an empty fragments array and fresh stage records."""
        shutil.rmtree(self.output, ignore_errors=True)
        shutil.rmtree(self.done_dir, ignore_errors=True)
        from voltrain.predict.output import split_container

        container, name = split_container(self.output)
        group = zarr.open_group(str(container), mode="a").require_group(name)
        group.attrs[RECORD_KEY] = {"complete": False, "thresholds": [], **spec.identity()}
        self._create_array(spec, self.fragments)
        for record in self.records.values():
            record.reset()
        self.tables_dir.mkdir(parents=True, exist_ok=True)

    def prepare_thresholds(self, spec: SegmentSpec) -> None:
        """Create the segmentation arrays of the spec's thresholds, unless this output
        already holds exactly those; the relabelling then starts over."""
        if self.record().get("thresholds") == spec.thresholds:
            return
        group = zarr.open_group(self.output, mode="r+")
        for name in list(group.keys()):
            if name.startswith("threshold_"):
                shutil.rmtree(Path(self.output) / name)
        self.lookup_path.unlink(missing_ok=True)
        self.records["relabel"].reset()
        for threshold in spec.thresholds:
            self._create_array(spec, self.segmentation(threshold))
        self.update_record(thresholds=spec.thresholds, complete=False)

    def _create_array(self, spec: SegmentSpec, path: str) -> None:
        from voltrain.predict.output import prepare_output_array

        prepare_output_array(
            path,
            shape=tuple(spec.volume_shape),
            offset=spec.roi.offset,
            voxel_size=Coordinate(spec.voxel_size),
            chunk_shape=tuple(map(min, spec.block_shape, spec.volume_shape)),
            dtype=np.uint64,
            attributes={},
            units=spec.units,
            labels=True,
        )

    def update_record(self, **values) -> None:
        group = zarr.open_group(self.output, mode="r+")
        group.attrs[RECORD_KEY] = {**dict(group.attrs[RECORD_KEY]), **values}

    def is_complete(self) -> bool:
        record = self.record()
        return bool(record and record.get("complete"))

    # --- edge tables and the lookup ------------------------------------------------------

    def write_table(self, name: str, ids, pairs, stats) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, ids=ids, pairs=pairs, stats=stats)
        write_atomically(self.tables_dir / f"{name}.npz", buffer.getvalue())

    def read_table(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.load(self.tables_dir / f"{name}.npz") as table:
            return table["ids"], table["pairs"], table["stats"]

    def write_lookup(self, fragment_ids: np.ndarray, segments: dict[float, np.ndarray]) -> None:
        thresholds = sorted(segments)
        buffer = io.BytesIO()
        np.savez(
            buffer,
            thresholds=np.asarray(thresholds),
            fragment_ids=fragment_ids,
            segment_ids=np.stack([segments[t] for t in thresholds]).reshape(len(thresholds), -1),
        )
        write_atomically(self.lookup_path, buffer.getvalue())

    def read_lookup(self) -> tuple[list[float], np.ndarray, np.ndarray]:
        with np.load(self.lookup_path) as lookup:
            return list(lookup["thresholds"]), lookup["fragment_ids"], lookup["segment_ids"]
