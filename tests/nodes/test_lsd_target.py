"""LsdTarget: local shape descriptors match a brute-force computation, describe the shape
they should (offsets point to the object's local centre), see beyond the sample's border,
and weigh background and masked voxels as documented."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array

from voltrain.nodes.lsd_target import LsdTarget, auto_downsample, local_shape_descriptors

GT, MASK, TARGET, WEIGHT = (gp.ArrayKey(n) for n in ("LSD_GT", "LSD_MASK", "LSD_T", "LSD_W"))
VOXEL_SIZE = Coordinate((20, 8, 8))  # anisotropic, as serial-section EM
SIGMA = (40.0, 24.0, 24.0)
PAIRS = ((0, 1), (0, 2), (1, 2))


def brute_force(labels, voxel, voxel_size, sigma) -> np.ndarray:
    """The 10 descriptors of one voxel, summing the truncated gaussian window by hand."""
    voxel_size = np.asarray(voxel_size, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    steps = sigma / voxel_size
    radius = [int(3 * s + 0.5) for s in steps]
    # each axis's kernel sums to 1 over its support, as scipy's gaussian filter does
    kernels = []
    for r, s in zip(radius, steps, strict=True):
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
        kernels.append(k / k.sum())
    label = labels[voxel]
    mass, first, second = 0.0, np.zeros(3), np.zeros((3, 3))
    for dz in range(-radius[0], radius[0] + 1):
        for dy in range(-radius[1], radius[1] + 1):
            for dx in range(-radius[2], radius[2] + 1):
                u = np.array(voxel) + (dz, dy, dx)
                if np.any(u < 0) or np.any(u >= labels.shape) or labels[tuple(u)] != label:
                    continue
                w = kernels[0][dz + radius[0]] * kernels[1][dy + radius[1]]
                w *= kernels[2][dx + radius[2]]
                position = u * voxel_size
                mass += w
                first += w * position
                second += w * np.outer(position, position)
    mean = first / mass
    covariance = second / mass - np.outer(mean, mean)
    offset = (mean - np.array(voxel) * voxel_size) / sigma * 0.5 + 0.5
    variance = np.diag(covariance) / sigma**2
    floored = np.maximum(np.diag(covariance), 1e-3)
    pearson = [covariance[a, b] / np.sqrt(floored[a] * floored[b]) * 0.5 + 0.5 for a, b in PAIRS]
    return np.clip(np.concatenate([offset, variance, pearson, [mass]]), 0, 1)


def objects(shape=(16, 32, 32)) -> np.ndarray:
    """Two boxes, a ball cutting into both and background around them."""
    labels = np.zeros(shape, dtype=np.uint64)
    labels[2:14, 3:20, 4:18] = 1
    labels[2:14, 20:30, 4:28] = 2
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    ball = ((z - 8) * 20.0) ** 2 + ((y - 14) * 8.0) ** 2 + ((x - 22) * 8.0) ** 2 < 60.0**2
    labels[ball] = 3
    return labels


def test_descriptors_match_a_brute_force_sum_over_the_window():
    labels = objects()
    descriptors = local_shape_descriptors(labels, VOXEL_SIZE, SIGMA)
    assert descriptors.shape == (10, *labels.shape) and descriptors.dtype == np.float32
    for voxel in [(8, 10, 10), (2, 3, 4), (13, 19, 17), (8, 20, 27), (8, 14, 22), (5, 25, 6)]:
        expected = brute_force(labels, voxel, VOXEL_SIZE, SIGMA)
        np.testing.assert_allclose(descriptors[(slice(None), *voxel)], expected, atol=2e-4)


def test_background_is_zero_in_every_channel():
    labels = objects()
    descriptors = local_shape_descriptors(labels, VOXEL_SIZE, SIGMA)
    assert np.all(descriptors[:, labels == 0] == 0)
    assert np.all(descriptors[9, labels != 0] > 0)


def test_deep_inside_a_large_object_the_window_is_full_and_centred():
    labels = np.ones((24, 48, 48), dtype=np.uint64)
    descriptors = local_shape_descriptors(labels, VOXEL_SIZE, SIGMA)
    at = descriptors[:, 12, 24, 24]
    np.testing.assert_allclose(at[:3], 0.5, atol=1e-5)  # no offset
    np.testing.assert_allclose(at[6:9], 0.5, atol=1e-5)  # uncorrelated
    assert at[9] == pytest.approx(1.0, abs=1e-5)  # the whole window
    # the coordinates' spread is the window's own: sigma² (less the truncated tails)
    np.testing.assert_allclose(at[3:6], 0.97, atol=0.03)


def test_offsets_point_to_the_local_centre_of_a_ball():
    shape = (20, 48, 48)
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    centre = np.array([10, 24, 24])
    position = np.stack([z, y, x]) * np.asarray(VOXEL_SIZE)[:, None, None, None]
    from_centre = position - (centre * np.asarray(VOXEL_SIZE))[:, None, None, None]
    radius = np.sqrt((from_centre**2).sum(axis=0))
    labels = (radius < 150).astype(np.uint64)
    descriptors = local_shape_descriptors(labels, VOXEL_SIZE, SIGMA)
    near_surface = (radius > 110) & (radius < 140)
    offsets = (descriptors[:3] - 0.5) * 2 * np.asarray(SIGMA)[:, None, None, None]
    cosine = (offsets * from_centre).sum(axis=0) / (np.linalg.norm(offsets, axis=0) * radius + 1e-9)
    assert near_surface.sum() > 100
    # inwards, towards the centre (the window is longer in z, which tilts it a little)
    assert np.all(cosine[near_surface] < -0.75)
    assert np.median(cosine[near_surface]) < -0.9
    # near the surface the window holds less of the object than at the centre
    assert descriptors[9][near_surface].max() < descriptors[9][tuple(centre)]


def test_downsampling_approximates_the_full_resolution_descriptors():
    labels = objects((16, 32, 32))
    full = local_shape_descriptors(labels, VOXEL_SIZE, SIGMA)
    coarse = local_shape_descriptors(labels, VOXEL_SIZE, SIGMA, downsample=2)
    foreground = labels != 0
    assert np.all(coarse[:, ~foreground] == 0)
    error = np.abs(full - coarse)[:, foreground]
    assert error.mean() < 0.05 and error.max() < 0.25


def run_node(labels, mask, output_roi, background_weight=False, downsample=1):
    offset = Coordinate((40, 16, 0))
    sources = [gp.ArraySource(GT, Array(labels, offset, VOXEL_SIZE), interpolatable=False)]
    if mask is not None:
        sources.append(gp.ArraySource(MASK, Array(mask, offset, VOXEL_SIZE), interpolatable=False))
    node = LsdTarget(
        GT,
        MASK if mask is not None else None,
        TARGET,
        WEIGHT,
        SIGMA,
        downsample=downsample,
        background_weight=background_weight,
    )
    pipeline = tuple(sources) + gp.MergeProvider() + node
    request = gp.BatchRequest()
    request[TARGET] = gp.ArraySpec(roi=output_roi.shift(offset))
    request[WEIGHT] = gp.ArraySpec(roi=output_roi.shift(offset))
    with gp.build(pipeline):
        batch = pipeline.request_batch(request)
    return batch[TARGET], batch[WEIGHT]


def test_a_sample_sees_its_objects_beyond_its_border():
    labels = objects()
    # 6 x 10 x 10 voxels in the middle: the windows reach 6 x 9 x 9 voxels beyond them
    output = Roi((100, 96, 96), (120, 80, 80))
    target, weight = run_node(labels, None, output)
    assert target.spec.roi == output.shift(Coordinate((40, 16, 0)))
    assert target.data.shape == weight.data.shape == (10, 6, 10, 10)
    whole = local_shape_descriptors(labels, VOXEL_SIZE, SIGMA)
    np.testing.assert_allclose(target.data, whole[:, 5:11, 12:22, 12:22], atol=1e-4)


def test_weights_follow_the_mask_and_skip_background_unless_asked():
    labels = objects()
    mask = np.ones(labels.shape, dtype=np.uint8)
    mask[:, :, :10] = 0
    roi = Roi((0, 0, 0), (320, 256, 256))
    target, weight = run_node(labels, mask, roi)
    trusted = (mask > 0) & (labels != 0)
    assert weight.data.dtype == np.float32 and weight.data.shape == (10, *labels.shape)
    assert np.all(weight.data == trusted[None])
    # masked voxels keep their descriptors (the weight hides them), computed from the gt
    np.testing.assert_allclose(target.data, local_shape_descriptors(labels, VOXEL_SIZE, SIGMA))
    _, weight = run_node(labels, mask, roi, background_weight=True)
    assert np.all(weight.data == (mask > 0)[None])


def test_at_the_volume_edge_the_window_sees_nothing_beyond_it():
    labels = np.ones((14, 28, 28), dtype=np.uint64)
    target, _ = run_node(labels, None, Roi((0, 0, 0), (280, 224, 224)))
    # a corner voxel's object lies inwards: positive offsets, a partial window
    assert np.all(target.data[:3, 0, 0, 0] > 0.6)
    assert target.data[9, 0, 0, 0] < 0.2
    assert target.data[9, 7, 14, 14] == pytest.approx(1.0, abs=1e-4)


def test_auto_downsampling_halves_only_the_axes_sigma_spans_widely():
    assert auto_downsample((80, 80, 80), (40, 8, 8)) == Coordinate((1, 2, 2))
    assert auto_downsample((40, 24, 24), (8, 8, 8)) == Coordinate((2, 1, 1))
    labels = objects()
    sigma = (40.0, 48.0, 48.0)  # 2 voxels in z, 6 in y and x
    node = LsdTarget(GT, None, TARGET, WEIGHT, sigma, downsample=None)
    source = gp.ArraySource(GT, Array(labels, (0, 0, 0), VOXEL_SIZE), interpolatable=False)
    pipeline = source + node
    roi = Roi((0, 0, 0), Coordinate(labels.shape) * VOXEL_SIZE)
    request = gp.BatchRequest()
    request[TARGET] = gp.ArraySpec(roi=roi)
    with gp.build(pipeline):
        target = pipeline.request_batch(request)[TARGET].data
    expected = local_shape_descriptors(labels, VOXEL_SIZE, sigma, downsample=(1, 2, 2))
    np.testing.assert_array_equal(target, expected)
    exact = local_shape_descriptors(labels, VOXEL_SIZE, sigma)
    assert np.abs(target - exact)[:, labels != 0].mean() < 0.03
