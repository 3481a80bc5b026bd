"""Join the targets and weights of several tasks into one multitask target."""

from __future__ import annotations

from collections.abc import Sequence

import gunpowder as gp
import numpy as np

from voltrain.nodes.label_target import requested_output_roi


class StackTargets(gp.BatchFilter):
    """Concatenate (C_i, z, y, x) targets and their weights along the channel axis.

    The parts' channels follow each other in the given order, so a multitask's loss can
    slice them back apart. The stacked arrays cover the ROI every part provides.

    Args:
        targets: the parts' target arrays, in channel order.
        weights: the parts' weight arrays, one per target.
        target: the stacked target to create.
        weight: the stacked weight to create.
    """

    def __init__(
        self,
        targets: Sequence[gp.ArrayKey],
        weights: Sequence[gp.ArrayKey],
        target: gp.ArrayKey,
        weight: gp.ArrayKey,
    ):
        if len(targets) != len(weights) or not targets:
            raise ValueError("expected one weight per target, and at least one target")
        self.targets = list(targets)
        self.weights = list(weights)
        self.target = target
        self.weight = weight

    def setup(self) -> None:
        spec = self.spec[self.targets[0]].copy()
        for key in self.targets[1:]:
            spec.roi = spec.roi.intersect(self.spec[key].roi)
        self.provides(self.target, spec)
        self.provides(self.weight, spec.copy())
        self.enable_autoskip()

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        roi = requested_output_roi(request, (self.target, self.weight))
        deps = gp.BatchRequest()
        for key in (*self.targets, *self.weights):
            deps[key] = gp.ArraySpec(roi=roi)
        return deps

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch:
        roi = requested_output_roi(request, (self.target, self.weight))
        outputs = gp.Batch()
        for key, parts in ((self.target, self.targets), (self.weight, self.weights)):
            data = np.concatenate([batch[part].crop(roi).data for part in parts], axis=0)
            spec = self.spec[key].copy()
            spec.roi = roi
            outputs[key] = gp.Array(data.astype(np.float32, copy=False), spec)
        return outputs
