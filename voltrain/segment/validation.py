"""Validation by segmentation: VOI and ARAND of the model's affinities during training.

``trainer.validation.metric: voi`` (or ``arand``) with ``mode: blockwise`` segments each
validation volume's predicted affinities in memory (``segment_array``, the algorithm of
``voltrain segment``) at every threshold of ``trainer.validation.thresholds``, scores each
against the gt (within the mask, gt 0 ignored) and reports the best threshold, as a
post-processing sweep does. Scores over several volumes are means weighted by the voxels
scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from funlib.geometry import Roi

from voltrain.evaluate import evaluate_segmentation
from voltrain.segment.config import SegmentConfig
from voltrain.segment.volume import segment_array

SEGMENTATION_METRICS = ("voi", "voi_split", "voi_merge", "arand")


def assemble_blocks(
    write_rois: Sequence[Roi], blocks: Sequence[np.ndarray], roi: Roi, voxel_size
) -> np.ndarray:
    """One (C, z, y, x) array over ``roi`` from blocks whose ROIs tile it (overhang cropped)."""
    channels = blocks[0].shape[-4]
    result = np.zeros((channels, *(roi.shape / voxel_size)), dtype=np.float32)
    for write_roi, block in zip(write_rois, blocks, strict=True):
        block = np.asarray(block).reshape(block.shape[-4:])
        inside = write_roi.intersect(roi)
        source = (inside.begin - write_roi.begin) / voxel_size
        target = (inside.begin - roi.begin) / voxel_size
        shape = inside.shape / voxel_size
        result[(slice(None), *(slice(t, t + s) for t, s in zip(target, shape, strict=True)))] = (
            block[(slice(None), *(slice(b, b + s) for b, s in zip(source, shape, strict=True)))]
        )
    return result


class SegmentationScorer:
    """Scores predicted affinities by segmenting them at several thresholds.

    Args:
        neighborhood: the task's affinity offsets.
        thresholds: the merge thresholds to sweep.
        metric: ``voi`` or ``arand``: which picks the best threshold.
        settings: fragment and scoring settings (the experiment's ``segment:``).
        channels: the prediction's channels holding the affinities (the task's
            ``affinity_channels()``); None: all of them.
    """

    def __init__(
        self,
        neighborhood: Sequence[Sequence[int]],
        thresholds: Sequence[float],
        metric: str = "voi",
        settings: SegmentConfig | None = None,
        channels: Sequence[int] | None = None,
    ):
        self.channels = None if channels is None else list(channels)
        self.neighborhood = [list(offset) for offset in neighborhood]
        self.thresholds = sorted(float(t) for t in thresholds)
        self.metric = "arand" if metric.endswith("arand") else "voi"
        settings = settings or SegmentConfig()
        self.settings = settings.model_copy(update={"block_shape": None})

    def score(self, volumes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> dict:
        """``validation_voi`` ... at the best threshold, and ``validation_threshold``.

        ``volumes``: (prediction, gt, mask or None, voxel size) of each validation volume.
        """
        totals = {t: dict.fromkeys(SEGMENTATION_METRICS, 0.0) for t in self.thresholds}
        voxels = 0
        for prediction, gt, mask, voxel_size in volumes:
            affinities = prediction if self.channels is None else prediction[self.channels]
            segmentations = segment_array(
                affinities, self.neighborhood, self.thresholds, mask, self.settings, voxel_size
            )
            for threshold, segmentation in segmentations.items():
                scores = evaluate_segmentation(segmentation, gt, mask)
                for name in SEGMENTATION_METRICS:
                    totals[threshold][name] += scores[name] * scores["voxels"]
            voxels += scores["voxels"]
        best = min(self.thresholds, key=lambda t: totals[t][self.metric])
        results = {f"validation_{k}": v / max(voxels, 1) for k, v in totals[best].items()}
        results["validation_threshold"] = best
        return results
