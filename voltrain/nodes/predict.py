"""Run a trained network on raw and provide its prediction (activated logits)."""

from __future__ import annotations

from collections.abc import Callable

import gunpowder as gp
import numpy as np
import torch
from funlib.geometry import Coordinate, Roi


class Predict(gp.BatchFilter):
    """Provide the model's activated prediction for a requested output ROI.

    For a request of ``prediction_key`` at ROI ``R``, raw is requested at ``R`` grown by
    ``context`` on every side, the model runs on it in one forward pass, and the activated
    output (float32, channels first) is provided at exactly ``R``. The model must map that
    input shape to ``R``'s shape (valid convolutions): a ROI that does not fit is a
    ``ValueError`` naming both shapes.

    Args:
        model: maps a (1, c, z, y, x) tensor to (1, C, z', y', x') logits.
        raw_key: float raw, (z, y, x) or (c, z, y, x), normalised as in training.
        prediction_key: the array to provide, float32 (C, z', y', x').
        context: world units the model's input extends beyond its output on each side.
        activation: turns logits into predictions, e.g. ``task.activation`` (sigmoid).
        device: where the model runs; it must already be there.
        output_voxel_size: the voxel size of the model's output (raw's times the U-Net's
            ``output_downsample``); None: raw's.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        raw_key: gp.ArrayKey,
        prediction_key: gp.ArrayKey,
        context: Coordinate,
        activation: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid,
        device: torch.device | str = "cpu",
        output_voxel_size: Coordinate | None = None,
    ):
        self.model = model
        self.raw_key = raw_key
        self.prediction_key = prediction_key
        self.context = Coordinate(context)
        self.activation = activation
        self.device = torch.device(device)
        self.output_voxel_size = (
            None if output_voxel_size is None else Coordinate(output_voxel_size)
        )

    def setup(self) -> None:
        # Batch norm and dropout must behave as at inference, whatever the caller left.
        self.model.eval()
        raw_spec = self.spec[self.raw_key]
        voxel_size = self._output_voxel_size()
        roi = raw_spec.roi
        if roi.unbounded:
            provided = roi
        else:
            provided = roi.grow(-self.context, -self.context)
            provided = provided.snap_to_grid(voxel_size, mode="shrink")
        spec = gp.ArraySpec(
            roi=provided, voxel_size=voxel_size, dtype=np.float32, interpolatable=True
        )
        self.provides(self.prediction_key, spec)

    def _output_voxel_size(self) -> Coordinate:
        if self.output_voxel_size is not None:
            return self.output_voxel_size
        return self.spec[self.raw_key].voxel_size

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        output_roi = request[self.prediction_key].roi
        voxel_size = self._output_voxel_size()
        if output_roi.snap_to_grid(voxel_size) != output_roi:
            raise ValueError(
                f"{self.prediction_key}: requested ROI {output_roi} is not aligned to the "
                f"voxel size {tuple(voxel_size)}"
            )
        deps = gp.BatchRequest()
        deps[self.raw_key] = gp.ArraySpec(roi=output_roi.grow(self.context, self.context))
        return deps

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch:
        output_roi: Roi = request[self.prediction_key].roi
        raw = batch[self.raw_key]
        voxel_size = self._output_voxel_size()
        prediction = self.apply_model(raw.data)
        wanted = tuple(output_roi.shape / voxel_size)
        if prediction.shape[1:] != wanted:
            raise ValueError(
                f"{self.prediction_key}: the model maps input {raw.data.shape} to output "
                f"{prediction.shape[1:]} voxels, but the request needs {wanted}; request an "
                "output shape the network produces"
            )
        spec = gp.ArraySpec(
            roi=output_roi, voxel_size=voxel_size, dtype=np.float32, interpolatable=True
        )
        outputs = gp.Batch()
        outputs[self.prediction_key] = gp.Array(prediction, spec)
        return outputs

    def apply_model(self, raw: np.ndarray) -> np.ndarray:
        """One forward pass on a (z, y, x) or (c, z, y, x) array: the activated
        (C, z', y', x') output."""
        tensor = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
        if tensor.dim() == 3:
            tensor = tensor[None]
        with torch.inference_mode():
            logits = self.model(tensor[None].to(self.device))
            prediction = self.activation(logits)[0]
        return prediction.to("cpu", torch.float32).numpy()
