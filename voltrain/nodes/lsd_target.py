"""Local shape descriptor (LSD) training target from a label volume.

After Sheridan et al. 2022 (Nature Methods, "Local shape descriptors for neuron
segmentation"): each voxel of an object gets statistics of that object's voxels inside a
gaussian window of ``sigma`` (world units) around it, ten channels in 3D, each in [0, 1]:

- 0-2: mean offset (z, y, x) from the voxel to the object's voxels in the window,
  ``offset / sigma * 0.5 + 0.5``;
- 3-5: variance (zz, yy, xx) of their coordinates, ``variance / sigma**2``;
- 6-8: Pearson coefficients (zy, zx, yx), ``pearson * 0.5 + 0.5``;
- 9: the object's gaussian-weighted share of the window (1 deep inside a large object).

Background (label 0) voxels are 0 in every channel. The statistics are gaussian filters of
the object's indicator times its voxel coordinates and their products (scipy.ndimage's
kernel, truncated at 3 sigma, zero beyond the labels given), computed per object on the
box around its voxels only. Values are clipped into [0, 1]. They agree with the ``lsds``
package (the paper's code) to 1e-4; ``benchmarks/lsd_target.py --lsds`` compares them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate, Roi
from scipy.ndimage import find_objects

from voltrain.nodes.label_target import LabelTarget

NUM_LSD_CHANNELS = 10
TRUNCATE = 3.0  # gaussian windows end at 3 sigma, as in the paper's implementation
# (z, y, x) axis pairs of the second moments: the variances, then the Pearson pairs
MOMENT_PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
MIN_VARIANCE = 1e-3  # world units²; keeps the Pearson coefficient of a flat object finite
AUTO_DOWNSAMPLE_VOXELS = 5  # sigma in voxels from which ``auto`` halves an axis


def auto_downsample(sigma: Sequence[float], voxel_size: Sequence[int]) -> Coordinate:
    """Per axis, 2 where sigma spans at least 5 voxels, else 1.

    On synthetic cells at 8 nm, halving a 40 nm (80 nm) sigma's axes changes the
    descriptors by 0.016 (0.009) on average and makes the target about 4 (13) times
    cheaper (``benchmarks/lsd_target.py``).
    """
    return Coordinate(
        2 if s >= AUTO_DOWNSAMPLE_VOXELS * v else 1 for s, v in zip(sigma, voxel_size, strict=True)
    )


def lsd_context(
    sigma: Sequence[float], voxel_size: Coordinate, downsample: Sequence[int]
) -> Coordinate:
    """Voxels of labels needed on each side of an output region for exact descriptors."""
    return Coordinate(
        math.ceil(TRUNCATE * s / v) + d
        for s, v, d in zip(sigma, voxel_size, downsample, strict=True)
    )


def local_shape_descriptors(
    labels: np.ndarray,
    voxel_size: Sequence[float],
    sigma: Sequence[float],
    output: tuple[slice, slice, slice] | None = None,
    downsample: int | Sequence[int] = 1,
) -> np.ndarray:
    """The (10, z, y, x) float32 descriptors of ``labels`` on its ``output`` region.

    Args:
        labels: integer (z, y, x) labels, 0 = background; the region around ``output``
            is the context the windows see (nothing is assumed beyond it).
        voxel_size: world units per voxel, (z, y, x).
        sigma: the gaussian window's standard deviation per axis, world units.
        output: the voxels to describe (default: all of ``labels``).
        downsample: filter on every ``downsample``-th voxel, one value or per axis (the
            paper's speed-up): each voxel takes the statistics of its coarse voxel.
    """
    output = output or tuple(slice(0, size) for size in labels.shape)
    begin = np.array([s.start for s in output])
    out_labels = labels[output]
    descriptors = np.zeros((NUM_LSD_CHANNELS, *out_labels.shape), dtype=np.float32)
    downsample = np.broadcast_to(np.asarray(downsample, dtype=np.int64), (3,))
    coarse = labels[tuple(slice(None, None, d) for d in downsample)]
    coarse_size = np.asarray(voxel_size, dtype=np.float64) * downsample
    coarse_sigma = np.asarray(sigma, dtype=np.float64) / coarse_size
    radius = np.array([int(TRUNCATE * s + 0.5) for s in coarse_sigma])
    ids, inverse = np.unique(out_labels, return_inverse=True)
    boxes = find_objects(inverse.reshape(out_labels.shape) + 1)
    for label, box in zip(ids, boxes, strict=True):
        if label == 0 or box is None:
            continue
        low = np.array([s.start for s in box]) + begin  # object's box in ``labels`` voxels
        high = np.array([s.stop for s in box]) + begin
        stats = _object_statistics(
            coarse, label, low, high, coarse_size, coarse_sigma, radius, downsample
        )
        inside = out_labels[box] == label
        values = descriptors[(slice(None), *box)]
        for axis in range(3):
            offset = stats[1 + axis] / np.float32(sigma[axis]) * 0.5 + 0.5
            values[axis][inside] = offset[inside]
        values[3:9][:, inside] = _normalised_moments(stats, sigma)[:, inside]
        values[9][inside] = stats[0][inside]
    return np.clip(descriptors, 0.0, 1.0, out=descriptors)


def _object_statistics(
    coarse: np.ndarray,
    label: int,
    low: np.ndarray,
    high: np.ndarray,
    coarse_size: np.ndarray,
    coarse_sigma: np.ndarray,
    radius: np.ndarray,
    downsample: np.ndarray,
) -> np.ndarray:
    """Window mass, mean offset (3) and covariance (6) of one object on the
    full-resolution box [low, high), each (10, *box shape), in world units.

    With downsampling each voxel takes its coarse voxel's statistics, the offset included
    (measured from the coarse voxel, so that it is 0 inside a large object)."""
    coarse_low = low // downsample
    coarse_high = (high - 1) // downsample + 1
    start = np.maximum(coarse_low - radius, 0)
    stop = np.minimum(coarse_high + radius, coarse.shape)
    crop = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
    indicator = (coarse[crop] == label).astype(np.float32)
    # positions relative to the crop's first voxel keep float32 products precise
    axes = [
        np.arange(n, dtype=np.float32) * np.float32(v)
        for n, v in zip(indicator.shape, coarse_size, strict=True)
    ]
    keeps = [slice(a - s, b - s) for a, b, s in zip(coarse_low, coarse_high, start, strict=True)]
    moments = _filtered_moments(indicator, axes, coarse_sigma, keeps)
    moments[1:] /= np.maximum(moments[0], 1e-6)
    for channel, (a, b) in enumerate(MOMENT_PAIRS):
        moments[4 + channel] -= moments[1 + a] * moments[1 + b]  # raw moment → covariance
    for axis in range(3):  # mean position → offset from each coarse voxel
        kept = axes[axis][coarse_low[axis] - start[axis] : coarse_high[axis] - start[axis]]
        moments[1 + axis] -= kept.reshape([-1 if a == axis else 1 for a in range(3)])
    # back to full resolution: each voxel takes its coarse voxel's statistics
    for axis in range(3):
        moments = np.repeat(moments, downsample[axis], axis=axis + 1)
        first = low[axis] - coarse_low[axis] * downsample[axis]
        keep = slice(first, first + high[axis] - low[axis])
        moments = moments[(slice(None),) * (axis + 1) + (keep,)]
    return moments


def _filtered_moments(
    indicator: np.ndarray,
    axes: Sequence[np.ndarray],
    sigma: Sequence[float],
    keeps: Sequence[slice],
) -> np.ndarray:
    """Gaussian-filtered mass, first (z, y, x) and second (zz, yy, xx, zy, zx, yx) moments
    of ``indicator``, (10, *kept box).

    A coordinate is constant along the other axes, so a pass along one axis filters only
    the products that change along it: 3 arrays along z, 6 along y, 10 along x, each on
    the box the earlier passes kept (a third of the work of filtering all 10 everywhere).
    """

    def along(axis: int) -> np.ndarray:
        return axes[axis].reshape([-1 if a == axis + 1 else 1 for a in range(4)])

    z, y, x = along(0), along(1), along(2)
    m = indicator[np.newaxis]
    by_z = _smooth(np.concatenate([m, m * z, m * z * z]), sigma[0], 1, keeps[0])
    a0, az, azz = by_z[:1], by_z[1:2], by_z[2:3]
    stack = [a0, a0 * y, a0 * y * y, az, az * y, azz]
    by_y = _smooth(np.concatenate(stack), sigma[1], 2, keeps[1])
    b0, by, byy, bz, bzy, bzz = (by_y[i : i + 1] for i in range(6))
    stack = [b0, b0 * x, b0 * x * x, by, by * x, byy, bz, bz * x, bzy, bzz]
    by_x = _smooth(np.concatenate(stack), sigma[2], 3, keeps[2])
    # mass, z, y, x, zz, yy, xx, zy, zx, yx (the order of MOMENT_PAIRS)
    return by_x[[0, 6, 3, 1, 9, 5, 2, 8, 7, 4]]


def _smooth(stack: np.ndarray, sigma: float, axis: int, keep: slice) -> np.ndarray:
    """``stack`` filtered along ``axis`` by a gaussian truncated at 3 sigma, zeros beyond
    its ends, at the positions ``keep`` only (scipy.ndimage's kernel, mode constant)."""
    radius = int(TRUNCATE * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    size = stack.shape[axis]
    index = [slice(None)] * stack.ndim
    index[axis] = slice(max(keep.start - radius, 0), min(keep.stop + radius, size))
    source = stack[tuple(index)]
    padding = [(0, 0)] * stack.ndim
    padding[axis] = (max(radius - keep.start, 0), max(keep.stop + radius - size, 0))
    if any(padding[axis]):
        source = np.pad(source, padding)
    length = keep.stop - keep.start
    index[axis] = slice(0, length)
    result = source[tuple(index)] * taps[0]
    term = np.empty_like(result)
    for offset in range(1, len(taps)):
        index[axis] = slice(offset, offset + length)
        result += np.multiply(source[tuple(index)], taps[offset], out=term)
    return result


def _normalised_moments(stats: np.ndarray, sigma: Sequence[float]) -> np.ndarray:
    """Variances over sigma² and Pearson coefficients mapped to [0, 1], (6, ...)."""
    covariance = stats[4:10]
    variance = np.maximum(covariance[:3], MIN_VARIANCE)
    result = np.empty_like(covariance)
    for axis in range(3):
        result[axis] = covariance[axis] / np.float32(sigma[axis] ** 2)
    for channel, (a, b) in enumerate(MOMENT_PAIRS[3:]):
        pearson = covariance[3 + channel] / np.sqrt(variance[a] * variance[b])
        result[3 + channel] = pearson * 0.5 + 0.5
    return result


class LsdTarget(LabelTarget):
    """Add local shape descriptors and their loss weight, both float32 (10, z, y, x).

    The labels are requested larger than the output by the windows' reach (3 sigma, plus
    ``downsample`` voxels), so that descriptors on the output border see their objects'
    voxels beyond it. Where that context leaves the labels' ROI (a sample at the edge of
    the volume), the windows see nothing beyond the ROI, as an object cut by the volume's
    edge is.

    The weight of a voxel is the mask there (1 = labels trusted); background voxels
    (label 0) get weight 0 unless ``background_weight`` is set, then they are taught
    all-zero descriptors. Labels under the mask's zeros still shape their neighbours'
    windows as they are given.

    Args:
        gt: integer labels, 0 = background.
        mask: 0/1 array of trusted voxels, on the labels' voxel grid; None trusts all.
        target: the array to create, 10 channels.
        weight: the array to create, the per-voxel loss weight (same in every channel).
        sigma: the gaussian window's standard deviation per axis (z, y, x), world units.
        downsample: compute on every ``downsample``-th voxel, one value or per axis (see
            ``local_shape_descriptors``); None: ``auto_downsample`` of the labels' voxel
            size.
        background_weight: train background voxels (to zero descriptors) too.
    """

    def __init__(
        self,
        gt: gp.ArrayKey,
        mask: gp.ArrayKey | None,
        target: gp.ArrayKey,
        weight: gp.ArrayKey,
        sigma: Sequence[float],
        downsample: int | Sequence[int] | None = 1,
        background_weight: bool = False,
    ):
        if len(sigma) != 3 or min(sigma) <= 0:
            raise ValueError(f"expected 3 positive sigmas, got {sigma}")
        if downsample is not None:
            downsample = Coordinate(np.broadcast_to(downsample, (3,)))
            if min(downsample) < 1:
                raise ValueError(f"expected downsample >= 1, got {downsample}")
        super().__init__(gt, mask, target, weight)
        self.sigma = tuple(float(s) for s in sigma)
        self.downsample_setting = downsample
        self.downsample = downsample  # set from the voxel size in setup() when None
        self.background_weight = background_weight

    def setup(self) -> None:
        if self.downsample_setting is None:
            self.downsample = auto_downsample(self.sigma, self.spec[self.gt].voxel_size)
        super().setup()

    def labels_roi(self, roi: Roi) -> Roi:
        # not shrunk by the context (see label_context): at the volume's edge the windows
        # see what the labels' ROI holds
        voxel_size = self.spec[self.gt].voxel_size
        context = lsd_context(self.sigma, voxel_size, self.downsample) * voxel_size
        grown = roi.grow(context, context)
        available = self.spec[self.gt].roi
        return grown if available is None else grown.intersect(available)

    def mask_roi(self, output_roi: Roi, labels_roi: Roi) -> Roi:
        return output_roi

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch:
        gt = batch[self.gt]
        voxel_size = gt.spec.voxel_size
        roi = self.output_roi(request)
        begin = (roi.begin - gt.spec.roi.begin) / voxel_size
        output = tuple(slice(b, b + s) for b, s in zip(begin, roi.shape / voxel_size, strict=True))
        target = local_shape_descriptors(gt.data, voxel_size, self.sigma, output, self.downsample)
        trusted = np.ones(target.shape[1:], dtype=bool)
        if self.mask is not None:
            trusted = batch[self.mask].crop(roi).data > 0
        if not self.background_weight:
            trusted = trusted & (gt.data[output] != 0)
        weight = np.broadcast_to(trusted.astype(np.float32), target.shape).copy()
        return self.outputs(roi, target, weight)
