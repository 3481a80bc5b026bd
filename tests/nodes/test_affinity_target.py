import itertools

import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array

from voltrain.nodes.affinity_target import AffinityTarget

VOXEL_SIZE = Coordinate(4, 2, 3)
OFFSET = Coordinate(40, 20, 30)
SHAPE = (9, 10, 11)
GT, MASK, TARGET, WEIGHT = (gp.ArrayKey(n) for n in ("GT", "MASK", "TARGET", "WEIGHT"))


def make_volumes(seed=0):
    rng = np.random.default_rng(seed)
    # Few labels on a coarse grid, so that many neighbours agree and some are background.
    labels = rng.integers(0, 4, size=SHAPE).astype(np.uint64)
    labels = np.repeat(labels, 2, axis=2)[..., : SHAPE[2]]
    mask = (rng.random(SHAPE) > 0.2).astype(np.uint8)
    return labels, mask


def pipeline(labels, mask, neighborhood, balance_weights):
    sources = tuple(
        gp.ArraySource(key, Array(data, OFFSET, VOXEL_SIZE)) + gp.Pad(key, None)
        for key, data in ((GT, labels), (MASK, mask))
    )
    return (
        sources
        + gp.MergeProvider()
        + AffinityTarget(GT, MASK, TARGET, WEIGHT, neighborhood, balance_weights)
    )


def reference(labels, mask, neighborhood, output_roi):
    """Brute force, voxel by voxel; anything outside the volume is background, untrusted."""
    begin = (output_roi.offset - OFFSET) / VOXEL_SIZE
    shape = output_roi.shape / VOXEL_SIZE

    def lookup(array, index):
        inside = all(0 <= i < s for i, s in zip(index, SHAPE, strict=True))
        return array[index] if inside else 0

    affinities = np.zeros((len(neighborhood), *shape), dtype=np.float32)
    weights = np.zeros_like(affinities)
    for c, offset in enumerate(neighborhood):
        for local in itertools.product(*(range(s) for s in shape)):
            here = tuple(b + i for b, i in zip(begin, local, strict=True))
            there = tuple(h + o for h, o in zip(here, offset, strict=True))
            a, b = lookup(labels, here), lookup(labels, there)
            affinities[(c, *local)] = float(a == b and a != 0)
            weights[(c, *local)] = float(lookup(mask, here) and lookup(mask, there))
    return affinities, weights


def request_batch(source, output_roi):
    request = gp.BatchRequest()
    for key in (TARGET, WEIGHT, GT, MASK):
        request[key] = gp.ArraySpec(roi=output_roi)
    with gp.build(source):
        return source.request_batch(request)


# The first ROI touches the lower volume border and sticks out of the upper one, so both
# the enlarged labels request and the padding are exercised; the second lies inside.
ROIS = [
    Roi(OFFSET, Coordinate(6, 8, 12) * VOXEL_SIZE).shift(Coordinate(0, 0, 1) * VOXEL_SIZE),
    Roi(OFFSET + Coordinate(2, 3, 1) * VOXEL_SIZE, Coordinate(5, 4, 9) * VOXEL_SIZE),
]
NEIGHBORHOODS = [
    [[-1, 0, 0], [0, -1, 0], [0, 0, -1]],
    [[-2, 0, 0], [0, 3, 0], [0, 0, -4], [1, -1, 2]],
]


@pytest.mark.parametrize("output_roi", ROIS)
@pytest.mark.parametrize("neighborhood", NEIGHBORHOODS)
def test_affinities_match_brute_force_up_to_the_output_border(output_roi, neighborhood):
    labels, mask = make_volumes()
    batch = request_batch(pipeline(labels, mask, neighborhood, False), output_roi)
    expected_affinities, expected_weights = reference(labels, mask, neighborhood, output_roi)
    target, weight = batch[TARGET], batch[WEIGHT]
    assert target.data.dtype == np.float32 and weight.data.dtype == np.float32
    assert target.spec.roi == output_roi and weight.spec.roi == output_roi
    assert target.spec.voxel_size == VOXEL_SIZE
    np.testing.assert_array_equal(target.data, expected_affinities)
    np.testing.assert_array_equal(weight.data, expected_weights)
    # gt and mask come back at the ROI they were requested at, not the enlarged one.
    assert batch[GT].spec.roi == output_roi and batch[MASK].spec.roi == output_roi
    assert batch[GT].data.shape == tuple(output_roi.shape / VOXEL_SIZE)


def test_background_voxels_have_zero_affinity():
    labels, mask = make_volumes(seed=1)
    output_roi = ROIS[1]
    batch = request_batch(pipeline(labels, mask, NEIGHBORHOODS[1], True), output_roi)
    background = batch[GT].data == 0
    assert background.any()
    assert not batch[TARGET].data[:, background].any()


@pytest.mark.parametrize("neighborhood", NEIGHBORHOODS)
def test_balanced_weights_split_evenly_between_positives_and_negatives(neighborhood):
    labels, mask = make_volumes(seed=2)
    output_roi = ROIS[0]
    unbalanced = request_batch(pipeline(labels, mask, neighborhood, False), output_roi)
    balanced = request_batch(pipeline(labels, mask, neighborhood, True), output_roi)
    target = balanced[TARGET].data
    np.testing.assert_array_equal(target, unbalanced[TARGET].data)
    for channel in range(len(neighborhood)):
        weight = balanced[WEIGHT].data[channel]
        positive = target[channel] == 1
        trusted = unbalanced[WEIGHT].data[channel] > 0
        assert (positive & trusted).any() and (~positive & trusted).any()
        # Balancing moves weight between classes, never onto untrusted affinities.
        np.testing.assert_array_equal(weight > 0, trusted)
        assert weight[positive].sum() == pytest.approx(weight[~positive].sum(), rel=1e-5)
        assert weight.sum() == pytest.approx(trusted.sum(), rel=1e-5)


def test_balancing_with_one_class_absent_keeps_the_mask_weight():
    labels = np.zeros(SHAPE, dtype=np.uint64)
    mask = np.ones(SHAPE, dtype=np.uint8)
    batch = request_batch(pipeline(labels, mask, NEIGHBORHOODS[0], True), ROIS[1])
    assert not batch[TARGET].data.any()
    np.testing.assert_array_equal(batch[WEIGHT].data, 1.0)


def test_without_mask_every_affinity_is_trusted():
    labels, _ = make_volumes()
    source = gp.ArraySource(GT, Array(labels, OFFSET, VOXEL_SIZE)) + gp.Pad(GT, None)
    source += AffinityTarget(GT, None, TARGET, WEIGHT, NEIGHBORHOODS[0], balance_weights=False)
    request = gp.BatchRequest()
    request[TARGET] = gp.ArraySpec(roi=ROIS[1])
    request[WEIGHT] = gp.ArraySpec(roi=ROIS[1])
    with gp.build(source):
        batch = source.request_batch(request)
    expected, _ = reference(labels, np.ones(SHAPE), NEIGHBORHOODS[0], ROIS[1])
    np.testing.assert_array_equal(batch[TARGET].data, expected)
    np.testing.assert_array_equal(batch[WEIGHT].data, 1.0)
    assert GT not in batch


def test_zero_offset_is_rejected():
    with pytest.raises(ValueError, match="nonzero"):
        AffinityTarget(GT, MASK, TARGET, WEIGHT, [[0, 0, 0]])


def test_affinities_of_one_small_object_are_clipped_by_default():
    labels = np.zeros(SHAPE, dtype=np.uint64)
    labels[4:6, 5, 5] = 3  # one positive z-affinity in the 5 * 4 * 9 output of ROIS[1]
    mask = np.ones(SHAPE, dtype=np.uint8)
    neighborhood = [[-1, 0, 0]]
    source = (
        tuple(
            gp.ArraySource(key, Array(data, OFFSET, VOXEL_SIZE)) + gp.Pad(key, None)
            for key, data in ((GT, labels), (MASK, mask))
        )
        + gp.MergeProvider()
    )
    source += AffinityTarget(GT, MASK, TARGET, WEIGHT, neighborhood)
    batch = request_batch(source, ROIS[1])
    target, weight = batch[TARGET].data[0], batch[WEIGHT].data[0]
    assert target.sum() == 1
    # fraction 1/180 is clipped to 0.05: the positive weighs 10, not 90 (half of 180)
    assert weight[target == 1].item() == pytest.approx(10.0)
    np.testing.assert_allclose(weight[target == 0], 1 / 1.9, rtol=1e-6)
