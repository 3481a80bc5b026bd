"""Signed, tanh-scaled distance-to-boundary training target from a label volume."""

from __future__ import annotations

import math

import edt
import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate, Roi

from voltrain.errors import DataError
from voltrain.nodes.label_target import LabelTarget


def signed_distances(labels: np.ndarray, voxel_size: Coordinate) -> np.ndarray:
    """World-unit distance of each voxel to the nearest voxel of another label, signed.

    Positive inside objects (label != 0: the distance to the nearest voxel of any other
    label, so touching objects have a boundary between them), negative in background (the
    distance to the nearest object voxel). Distances run between voxel centres, on the
    anisotropic grid of ``voxel_size``. Only boundaries inside ``labels`` count: a voxel
    with none in reach gets +-inf.
    """
    background = labels == 0
    unused = _unused_label(labels)
    if unused is None:
        inside = _edt(labels, voxel_size)
        outside = _edt(background.view(np.uint8), voxel_size)
        distances = np.where(background, -outside, inside)
    else:
        # Background as one more object: one multi-label pass measures both sides.
        distances = _edt(np.where(background, unused, labels), voxel_size)
        np.negative(distances, out=distances, where=background)
    return distances.astype(np.float32, copy=False)


def _unused_label(labels: np.ndarray) -> int | None:
    """A nonzero id of ``labels``' integer dtype above all of its ids, or None."""
    if not np.issubdtype(labels.dtype, np.integer) or labels.size == 0:
        return None
    top = int(labels.max())
    return top + 1 if top < np.iinfo(labels.dtype).max else None


def distance_to_untrusted(trusted: np.ndarray, voxel_size: Coordinate) -> np.ndarray:
    """World-unit distance of each trusted voxel to the nearest untrusted one (0 on those,
    inf where ``trusted`` has none)."""
    return _edt(trusted.view(np.uint8) if trusted.dtype == bool else trusted, voxel_size)


def _edt(labels: np.ndarray, voxel_size: Coordinate) -> np.ndarray:
    # black_border=False: the array's edge is no boundary; the caller reads enough context.
    anisotropy = tuple(float(v) for v in voxel_size)
    return edt.edt(np.ascontiguousarray(labels), anisotropy=anisotropy, black_border=False)


def context_voxels(context: float, voxel_size: Coordinate) -> Coordinate:
    """Voxels per axis that cover ``context`` world units."""
    return Coordinate(math.ceil(context / v) for v in voxel_size)


class DistanceTarget(LabelTarget):
    """Add tanh(d / scale) of the signed boundary distance d and its loss weight, both
    float32 (channels, z, y, x).

    ``d`` is ``signed_distances`` of the labels: positive inside objects, negative in
    background, in world units; one channel. With ``num_classes`` the labels are class
    ids instead, and channel k - 1 holds the distance to the boundary of class k's region
    (k = 1..num_classes - 1), positive inside it. Labels are requested larger than the output by
    ``context`` world units on every side, and ``d`` is clipped to [-context, context]:
    every boundary within ``context`` of an output voxel lies in the enlarged labels, so
    the target equals tanh(clip(true d, -context, context) / scale) everywhere in the
    output, the sample border included. Upstream must provide the enlarged labels (voltrain's
    sources pad with background, which then reads as a boundary at the volume's edge).

    The weight is the mask (1 = labels trusted) on the output region. With
    ``mask_distances`` it is also 0 where ``|d|`` (clipped) reaches the nearest untrusted
    voxel: a nearer boundary could hide there, so the target is not known. The mask is
    then read with the same context as the labels.

    Args:
        gt: integer labels, 0 = background.
        mask: 0/1 array of trusted voxels, on the labels' voxel grid; None trusts all.
        target: the array to create.
        weight: the array to create, the per-voxel loss weight.
        scale: world units; the target is tanh(d / scale).
        context: world units of labels read beyond the output, and the distance clip.
        mask_distances: also weigh 0 the voxels whose distance reaches untrusted voxels.
        num_classes: None for object labels; else gt holds class ids 0..num_classes - 1
            (0 = background), one channel per foreground class.
    """

    def __init__(
        self,
        gt: gp.ArrayKey,
        mask: gp.ArrayKey | None,
        target: gp.ArrayKey,
        weight: gp.ArrayKey,
        scale: float,
        context: float,
        mask_distances: bool = True,
        num_classes: int | None = None,
    ):
        if not scale > 0 or not context > 0:
            raise ValueError(f"scale and context must be > 0, got {scale} and {context}")
        super().__init__(gt, mask, target, weight)
        self.scale = scale
        self.context = context
        self.mask_distances = mask_distances
        self.num_classes = num_classes

    def _context(self) -> Coordinate:
        voxel_size = self.spec[self.gt].voxel_size
        return context_voxels(self.context, voxel_size) * voxel_size

    def label_context(self) -> tuple[Coordinate, Coordinate]:
        return self._context(), self._context()

    def mask_roi(self, output_roi: Roi, labels_roi: Roi) -> Roi:
        return labels_roi if self.mask_distances else output_roi

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch:
        gt = batch[self.gt]
        voxel_size = gt.spec.voxel_size
        output_roi = gt.spec.roi.grow(-self._context(), -self._context())
        inner = ((output_roi - gt.spec.roi.offset) / voxel_size).to_slices()
        distances = np.stack(
            [signed_distances(region, voxel_size)[inner] for region in self._regions(gt.data)]
        )
        np.clip(distances, -self.context, self.context, out=distances)
        target = np.tanh(distances / self.scale, dtype=np.float32)
        weight = np.ones_like(target)
        if self.mask is not None:
            trusted = batch[self.mask].crop(gt.spec.roi if self.mask_distances else output_roi)
            weight[:] = trusted.crop(output_roi).data > 0
            if self.mask_distances:
                weight *= self._known(distances, trusted.data > 0, voxel_size, inner)
        return self.outputs(output_roi, target, weight)

    def _regions(self, labels: np.ndarray) -> list[np.ndarray]:
        """The label arrays whose boundaries the channels measure."""
        if self.num_classes is None:
            return [labels]
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            unknown = labels[(labels < 0) | (labels >= self.num_classes)]
            raise DataError(
                f"{self.gt} holds class ids {np.unique(unknown)[:5].tolist()} outside "
                f"0..{self.num_classes - 1}: raise task.num_classes"
            )
        return [(labels == k).view(np.uint8) for k in range(1, self.num_classes)]

    def _known(self, distances, trusted, voxel_size, inner) -> np.ndarray:
        """Where the clipped distance is exact although some labels are untrusted.

        With ``reach`` the distance to the nearest untrusted voxel: if ``|d| < reach`` the
        boundary voxel that gives ``d`` and every voxel nearer are trusted; if ``reach >=
        context`` every voxel within the clip is. Otherwise an untrusted voxel could be a
        nearer boundary, or be the one that gives ``d`` (the volume's padded edge).
        """
        reach = distance_to_untrusted(trusted, voxel_size)[inner]
        return (np.abs(distances) < reach) | (reach >= self.context)
