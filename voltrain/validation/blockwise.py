"""Blockwise validation: the loss and the task's metrics over the whole gt ROI of every
validation dataset, predicted block by block as ``voltrain predict`` does.

The gt ROI is cut into blocks of the network's output shape, from its offset (the last
block on an axis overhangs; its voxels outside the gt ROI get weight 0). For each block,
one gunpowder graph provides the network's logits through the ``Predict`` node that
prediction workers use (raw read with the network's context, zeros outside the raw array,
normalised and intensity-mapped as in training) and the task's target and weight from gt
and mask. So the predictions are exactly those ``voltrain predict`` writes, and targets
and weights are built per block just as for a training sample of that output region.

It runs in the training process on the model being trained, without daisy: a daisy run
would start worker processes that load a checkpoint from disk and write a zarr array on
every validation, which costs seconds and disk for nothing here.

``validation_loss`` is sum(weight * loss) / sum(weight) over all blocks of all datasets;
the metrics are ``Task.metric`` over all blocks at once (so dice is the global dice, not a
mean over blocks). That holds every block's prediction, target and weight on the CPU:
12 bytes per output voxel and channel.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import gunpowder as gp
import numpy as np
import torch
from funlib.geometry import Coordinate, Roi

from voltrain.blocks.record import tile_roi
from voltrain.data import TrainingVolume
from voltrain.errors import unwrap_voltrain_errors
from voltrain.inference import InputConfig, check_centred, inference_graph
from voltrain.nodes.roi_mask_source import RoiMaskSource
from voltrain.nodes.zarr_source import ZarrSource
from voltrain.validation import validation_results

logger = logging.getLogger(__name__)

RAW = gp.ArrayKey("VALIDATION_RAW")
GT = gp.ArrayKey("VALIDATION_GT")
MASK = gp.ArrayKey("VALIDATION_MASK")
LOGITS = gp.ArrayKey("VALIDATION_LOGITS")
TARGET = gp.ArrayKey("VALIDATION_TARGET")
WEIGHT = gp.ArrayKey("VALIDATION_WEIGHT")

MEMORY_WARNING_BYTES = 2**30


def _logits(x: torch.Tensor) -> torch.Tensor:
    """No activation: the loss takes the network's logits."""
    return x


class BlockwiseValidator:
    """Scores a model on the whole gt ROI of each validation volume, block by block.

    Args:
        volumes: the opened validation datasets.
        task: the runtime task (target node, loss, activation, metrics).
        input_shape: network input, voxels.
        output_shape: network output, voxels.
        input_config: normalisation and fixed intensity maps, as in training.
        device: where the model runs.
        scorer: a ``SegmentationScorer`` that adds VOI and ARAND of the segmented
            predictions (``trainer.validation.metric: voi`` or ``arand``), or None.
    """

    def __init__(
        self,
        volumes: Sequence[TrainingVolume],
        task,
        input_shape: Coordinate,
        output_shape: Coordinate,
        input_config: InputConfig,
        device: torch.device,
        scorer=None,
    ):
        # output voxels per input voxel; the volumes share it (open_training_volumes)
        factor = volumes[0].voxel_size / volumes[0].raw_voxel_size
        check_centred(
            input_shape,
            Coordinate(output_shape) * factor,
            "trainer.validation.mode blockwise",
        )
        self.scorer = scorer
        self.volumes = list(volumes)
        self.task = task
        self.input_shape = Coordinate(input_shape)
        self.output_shape = Coordinate(output_shape)
        self.input_config = input_config
        self.device = torch.device(device)
        voxels = sum(len(self.blocks(v)) for v in self.volumes) * np.prod(self.output_shape)
        held = int(voxels) * task.num_channels * 12
        if held > MEMORY_WARNING_BYTES:
            logger.warning(
                "blockwise validation holds %.1f GiB of predictions, targets and weights; "
                "crop the data.validate volumes to need less",
                held / 2**30,
            )

    def blocks(self, volume: TrainingVolume) -> list[Roi]:
        """The output ROIs of the blocks that cover ``volume``'s gt ROI."""
        return tile_roi(volume.gt.roi, self.output_shape * volume.voxel_size)

    def _graph(self, volume: TrainingVolume, model: torch.nn.Module) -> gp.Pipeline:
        voxel_size = volume.voxel_size
        raw_size = self.input_shape * volume.raw_voxel_size
        context = (raw_size - self.output_shape * voxel_size) / 2
        raw = inference_graph(
            volume.raw,
            RAW,
            LOGITS,
            model,
            self.input_config,
            context,
            _logits,
            self.device,
            output_voxel_size=voxel_size,
        )
        if volume.mask is not None:
            mask_roi = volume.mask.roi.intersect(volume.gt.roi)
            mask = ZarrSource(MASK, volume.mask, mask_roi, interpolatable=False)
        else:
            mask = RoiMaskSource(MASK, volume.gt.roi, voxel_size)
        labels = (ZarrSource(GT, volume.gt, interpolatable=False), mask) + gp.MergeProvider()
        labels += self.task.target_node(GT, MASK, TARGET, WEIGHT)
        return (raw, labels) + gp.MergeProvider()

    def evaluate(
        self, model: torch.nn.Module, autocast: Callable | None = None
    ) -> dict[str, float]:
        """``validation_loss`` and ``validation_<metric>`` of the task over every block.

        The forward passes run in float32 without autocast, as ``voltrain predict``'s do;
        ``autocast`` is accepted for the ``Validator`` interface.
        """
        was_training = model.training
        weighted_loss = torch.zeros((), dtype=torch.float64)
        total_weight = torch.zeros((), dtype=torch.float64)
        predictions, targets, weights = [], [], []
        segmentable = []
        try:
            for volume in self.volumes:
                first = len(predictions)
                for logits, target, weight in self._blocks_of(volume, model):
                    loss = self.task.loss(logits, target, weight)
                    # task.loss divides by clamp(sum(weight), 1e-6): undo it to sum blocks.
                    block_weight = weight.sum(dtype=torch.float64)
                    weighted_loss += loss.double() * block_weight.clamp(min=1e-6)
                    total_weight += block_weight
                    predictions.append(self.task.activation(logits))
                    targets.append(target)
                    weights.append(weight)
                if self.scorer is not None:
                    segmentable.append(self._segmentable(volume, predictions[first:]))
        finally:
            model.train(was_training)
        loss = float(weighted_loss / total_weight) if total_weight > 0 else math.nan
        results = validation_results(self.task, loss, predictions, targets, weights)
        if self.scorer is not None:
            results.update(self.scorer.score(segmentable))
        return results

    def _segmentable(self, volume: TrainingVolume, predictions: list[torch.Tensor]):
        """(affinities, gt, mask, voxel size) of a volume over its gt ROI, for the scorer."""
        from voltrain.segment.validation import assemble_blocks

        roi = volume.gt.roi
        blocks = [p.numpy() for p in predictions]
        affinities = assemble_blocks(self.blocks(volume), blocks, roi, volume.voxel_size)
        mask = None if volume.mask is None else volume.mask.to_ndarray(roi, fill_value=0)
        return affinities, volume.gt[roi], mask, volume.voxel_size

    def _blocks_of(self, volume: TrainingVolume, model: torch.nn.Module):
        """(logits, target, weight) of every block of ``volume``, each (1, C, z, y, x)."""
        graph = self._graph(volume, model)
        with unwrap_voltrain_errors(), gp.build(graph):
            for write_roi in self.blocks(volume):
                request = gp.BatchRequest()
                for key in (LOGITS, TARGET, WEIGHT):
                    request[key] = gp.ArraySpec(roi=write_roi)
                batch = graph.request_batch(request)
                yield tuple(
                    torch.from_numpy(np.ascontiguousarray(batch[key].data, dtype=np.float32))[
                        np.newaxis
                    ]
                    for key in (LOGITS, TARGET, WEIGHT)
                )
