import itertools
import math

import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array

from voltrain.nodes.distance_target import DistanceTarget

VOXEL_SIZE = Coordinate(4, 1, 2)
OFFSET = Coordinate(8, 3, 4)
SHAPE = (6, 12, 10)
SCALE, CONTEXT = 3.0, 6.0
GT, MASK, TARGET, WEIGHT = (gp.ArrayKey(n) for n in ("GT", "MASK", "TARGET", "WEIGHT"))


def touching_boxes():
    labels = np.zeros(SHAPE, dtype=np.uint64)
    labels[1:5, 2:7, 1:5] = 1
    labels[1:5, 7:11, 1:8] = 2  # touches box 1 along y (rows 6 | 7)
    return labels


def request(labels, roi, mask=None, scale=SCALE, context=CONTEXT, mask_distances=True):
    mask = np.ones(SHAPE, dtype=np.uint8) if mask is None else mask
    sources = tuple(
        gp.ArraySource(key, Array(data, OFFSET, VOXEL_SIZE)) + gp.Pad(key, None)
        for key, data in ((GT, labels), (MASK, mask))
    )
    node = DistanceTarget(GT, MASK, TARGET, WEIGHT, scale, context, mask_distances)
    pipeline = sources + gp.MergeProvider() + node
    batch_request = gp.BatchRequest()
    for key in (TARGET, WEIGHT, GT):
        batch_request[key] = gp.ArraySpec(roi=roi)
    with gp.build(pipeline):
        return pipeline.request_batch(batch_request)


def brute_force_distance(labels, roi):
    """Signed world distance of every output voxel to the nearest voxel of another label,
    searching a zero-padded copy at least CONTEXT wide, clipped to CONTEXT."""
    margin = [math.ceil(CONTEXT / v) + 1 for v in VOXEL_SIZE]
    padded = np.pad(labels, [(m, m) for m in margin])
    grid = np.stack(np.meshgrid(*map(np.arange, padded.shape), indexing="ij"), axis=-1)
    world = grid * np.asarray(VOXEL_SIZE)
    begin = (roi.offset - OFFSET) / VOXEL_SIZE
    shape = roi.shape / VOXEL_SIZE
    result = np.zeros(shape, dtype=np.float64)
    for index in itertools.product(*map(range, shape)):
        at = tuple(b + i + m for b, i, m in zip(begin, index, margin, strict=True))
        other = padded != padded[at]
        distance = np.sqrt(((world[other] - world[at]) ** 2).sum(axis=1)).min()
        distance = min(distance, CONTEXT)
        result[index] = distance if padded[at] != 0 else -distance
    return result


# Inside the volume, and sticking out of it (its labels context is all padding).
ROIS = [
    Roi(OFFSET + Coordinate(1, 2, 1) * VOXEL_SIZE, Coordinate(4, 9, 7) * VOXEL_SIZE),
    Roi(OFFSET - Coordinate(1, 1, 1) * VOXEL_SIZE, Coordinate(4, 6, 5) * VOXEL_SIZE),
]


@pytest.mark.parametrize("roi", ROIS)
def test_target_is_tanh_of_the_anisotropic_distance_to_each_objects_own_boundary(roi):
    labels = touching_boxes()
    batch = request(labels, roi)
    target = batch[TARGET]
    assert target.data.dtype == np.float32 and target.data.shape == (1, *(roi.shape / VOXEL_SIZE))
    assert target.spec.roi == roi and batch[GT].spec.roi == roi
    expected = np.tanh(brute_force_distance(labels, roi) / SCALE)
    np.testing.assert_allclose(target.data[0], expected, atol=1e-5)


def test_hand_computed_voxels_and_signs():
    labels = touching_boxes()
    roi = ROIS[0]
    target = request(labels, roi)[TARGET].data[0]

    def at(z, y, x):  # volume voxel index -> target value
        index = Coordinate(z, y, x) - (roi.offset - OFFSET) / VOXEL_SIZE
        return target[tuple(index)]

    # box 1 next to box 2 (y 6 | 7): 1 world unit to the other object's voxel
    assert at(2, 6, 3) == pytest.approx(math.tanh(1 / SCALE), abs=1e-6)
    # box 2 next to box 1: positive too, touching objects both stay inside
    assert at(2, 7, 3) == pytest.approx(math.tanh(1 / SCALE), abs=1e-6)
    # background beside box 1 along x: one x voxel = 2 world units away, negative
    assert at(2, 4, 5) == pytest.approx(-math.tanh(2 / SCALE), abs=1e-6)
    # two x voxels from box 1 (4 units) but three y voxels from box 2 (3 units)
    assert at(2, 4, 6) == pytest.approx(-math.tanh(3 / SCALE), abs=1e-6)
    # box 1 centre-ish (2, 4, 2): nearest other label at x = 0 (2 * 2) or y = 1 (3 * 1)
    assert at(2, 4, 2) == pytest.approx(math.tanh(3 / SCALE), abs=1e-6)
    objects = labels[((roi - OFFSET) / VOXEL_SIZE).to_slices()] != 0
    assert (target[objects] > 0).all() and (target[~objects] < 0).all()


def test_distances_beyond_the_context_are_clipped_to_it():
    labels = np.full(SHAPE, 5, dtype=np.uint64)  # one object filling the volume
    roi = Roi(OFFSET + Coordinate(2, 5, 4) * VOXEL_SIZE, Coordinate(2, 2, 2) * VOXEL_SIZE)
    target = request(labels, roi, context=2.0)[TARGET].data
    # the nearest boundary (outside the volume) is > 2 world units away from every voxel
    np.testing.assert_allclose(target, math.tanh(2.0 / SCALE), rtol=1e-6)


def test_weight_is_the_mask_on_the_output():
    labels = touching_boxes()
    mask = (np.random.default_rng(0).random(SHAPE) > 0.4).astype(np.uint8)
    roi = ROIS[0]
    batch = request(labels, roi, mask=mask, mask_distances=False)
    weight = batch[WEIGHT].data
    assert weight.dtype == np.float32 and weight.shape == batch[TARGET].data.shape
    np.testing.assert_array_equal(weight[0], mask[((roi - OFFSET) / VOXEL_SIZE).to_slices()])


@pytest.mark.parametrize("roi", ROIS)
def test_masked_distances_weigh_only_voxels_whose_distance_is_known(roi):
    labels = touching_boxes()
    mask = np.ones(SHAPE, dtype=np.uint8)
    mask[:, :, 6:] = 0  # x >= 6 untrusted: box 2's far end and background beyond
    mask[3, 8, 2] = 0  # one untrusted voxel inside box 2
    batch = request(labels, roi, mask=mask)
    weight = batch[WEIGHT].data[0]
    # brute force: trusted, and no untrusted voxel (outside the volume included) lies
    # at or within the voxel's clipped distance |d|
    distance = np.abs(brute_force_distance(labels, roi))
    margin = [math.ceil(CONTEXT / v) + 1 for v in VOXEL_SIZE]
    padded = np.pad(mask, [(m, m) for m in margin])
    world = np.stack(np.meshgrid(*map(np.arange, padded.shape), indexing="ij"), -1) * np.asarray(
        VOXEL_SIZE
    )
    untrusted = world[padded == 0]
    begin = (roi.offset - OFFSET) / VOXEL_SIZE
    expected, trusted = np.zeros_like(weight), np.zeros_like(weight)
    for index in itertools.product(*map(range, weight.shape)):
        at = tuple(b + i + m for b, i, m in zip(begin, index, margin, strict=True))
        reach = np.sqrt(((untrusted - world[at]) ** 2).sum(axis=1)).min()
        trusted[index] = padded[at] > 0
        # exact if every voxel up to the boundary found is trusted, or up to the clip
        known = distance[index] < reach - 1e-6 or reach >= CONTEXT
        expected[index] = trusted[index] and known
    np.testing.assert_array_equal(weight, expected)
    # some trusted voxels lose their weight because their distance reaches untrusted ones
    assert 0 < expected.sum() < trusted.sum()


def test_masked_distances_give_no_weight_to_the_false_boundary_at_the_volume_edge():
    labels = np.full(SHAPE, 4, dtype=np.uint64)  # one object running out of the volume
    mask = np.ones(SHAPE, dtype=np.uint8)  # trusted inside the volume, padded 0 outside
    roi = Roi(OFFSET, Coordinate(SHAPE) * VOXEL_SIZE)
    weight = request(labels, roi, mask=mask)[WEIGHT].data[0]
    # x voxels are 2 units wide: the edge is 2, 4 (< CONTEXT = 6) units from the first two
    # x columns, whose distance is the edge's and so unknown
    assert not weight[:, :, :2].any() and not weight[:, :, -2:].any()
    # one voxel deeper on every axis the edge is >= CONTEXT away: the clip is exact there
    assert weight[2:-2, 6:-6, 3:-3].all()
    assert request(labels, roi, mask=mask, mask_distances=False)[WEIGHT].data.all()


def three_boxes():
    """Object ids: the touching boxes and box 3 right of box 1 (x 5:8), touching it."""
    labels = touching_boxes()
    labels[1:5, 2:7, 5:8] = 3
    return labels


def class_boxes():
    """Class ids of ``three_boxes``: boxes 1 and 3 are class 1, box 2 is class 2."""
    return np.where(three_boxes() == 3, 1, three_boxes())


def request_classes(classes, roi, num_classes):
    sources = tuple(
        gp.ArraySource(key, Array(data, OFFSET, VOXEL_SIZE)) + gp.Pad(key, None)
        for key, data in ((GT, classes), (MASK, np.ones(SHAPE, dtype=np.uint8)))
    )
    node = DistanceTarget(GT, MASK, TARGET, WEIGHT, SCALE, CONTEXT, num_classes=num_classes)
    pipeline = sources + gp.MergeProvider() + node
    batch_request = gp.BatchRequest()
    batch_request[TARGET] = gp.ArraySpec(roi=roi)
    batch_request[WEIGHT] = gp.ArraySpec(roi=roi)
    with gp.build(pipeline):
        return pipeline.request_batch(batch_request)


@pytest.mark.parametrize("roi", ROIS)
def test_with_classes_each_channel_is_the_distance_to_its_class_region(roi):
    classes = class_boxes()
    batch = request_classes(classes, roi, num_classes=3)
    target, weight = batch[TARGET].data, batch[WEIGHT].data
    assert target.shape == (2, *(roi.shape / VOXEL_SIZE)) and weight.shape == target.shape
    for k in (1, 2):
        region = (classes == k).astype(np.uint64)
        expected = np.tanh(brute_force_distance(region, roi) / SCALE)
        np.testing.assert_allclose(target[k - 1], expected, atol=1e-5)


def test_with_classes_touching_objects_of_one_class_share_a_region():
    roi = ROIS[0]
    index = tuple(Coordinate(2, 4, 4) - (roi.offset - OFFSET) / VOXEL_SIZE)
    objects = request(three_boxes(), roi)[TARGET].data
    # as objects, box 1's voxel (2, 4, 4) is one x voxel (2 units) from box 3
    assert objects[0][index] == pytest.approx(math.tanh(2 / SCALE), abs=1e-6)
    target = request_classes(class_boxes(), roi, num_classes=3)[TARGET].data
    # as class 1, boxes 1 and 3 are one region: its boundary is 3 y voxels away (y = 1 is
    # background, y = 7 class 2)
    assert target[0][index] == pytest.approx(math.tanh(3 / SCALE), abs=1e-6)
    # in class 2's channel the same voxel is outside, 3 y voxels from box 2 (y = 7)
    assert target[1][index] == pytest.approx(-math.tanh(3 / SCALE), abs=1e-6)


def test_with_classes_an_id_beyond_num_classes_is_a_data_error():
    from voltrain.errors import DataError

    with pytest.raises(Exception) as error:
        request_classes(class_boxes(), ROIS[0], num_classes=2)
    cause = error.value
    while cause is not None and not isinstance(cause, DataError):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None and "[2]" in str(cause) and "num_classes" in str(cause)


def test_labels_using_their_dtypes_largest_id_give_the_same_distances():
    from voltrain.nodes.distance_target import signed_distances

    labels = touching_boxes().astype(np.uint8)
    labels[labels == 2] = 255  # no id left above it: the two-pass path
    expected = signed_distances(labels.astype(np.uint16), VOXEL_SIZE)  # the one-pass path
    np.testing.assert_array_equal(signed_distances(labels, VOXEL_SIZE), expected)
    roi = ROIS[0]
    reference = brute_force_distance(labels, roi)  # clipped to CONTEXT
    expected = np.clip(expected, -CONTEXT, CONTEXT)
    np.testing.assert_allclose(
        expected[((roi - OFFSET) / VOXEL_SIZE).to_slices()], reference, atol=1e-5
    )
