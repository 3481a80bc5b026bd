import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array

from voltrain.errors import DataError
from voltrain.nodes.binary_target import BinaryTarget, class_balanced_weight

VOXEL_SIZE = Coordinate(4, 2, 2)
OFFSET = Coordinate(8, 0, 6)
SHAPE = (6, 7, 8)
GT, MASK, TARGET, WEIGHT = (gp.ArrayKey(n) for n in ("GT", "MASK", "TARGET", "WEIGHT"))
OUTPUT_ROI = Roi(OFFSET + Coordinate(1, 2, 1) * VOXEL_SIZE, Coordinate(4, 4, 6) * VOXEL_SIZE)


def volumes(seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=SHAPE).astype(np.uint32)
    mask = (rng.random(SHAPE) > 0.3).astype(np.uint8)
    return labels, mask


def request_batch(labels, mask, balance_weights, mask_voxel_size=VOXEL_SIZE):
    gt_source = gp.ArraySource(GT, Array(labels, OFFSET, VOXEL_SIZE))
    mask_source = gp.ArraySource(MASK, Array(mask, OFFSET, mask_voxel_size))
    pipeline = (
        (gt_source, mask_source)
        + gp.MergeProvider()
        + BinaryTarget(GT, MASK, TARGET, WEIGHT, balance_weights)
    )
    request = gp.BatchRequest()
    request[TARGET] = gp.ArraySpec(roi=OUTPUT_ROI)
    request[WEIGHT] = gp.ArraySpec(roi=OUTPUT_ROI)
    request[GT] = gp.ArraySpec(roi=OUTPUT_ROI)
    with gp.build(pipeline):
        return pipeline.request_batch(request)


def crop(array):
    return array[((OUTPUT_ROI - OFFSET) / VOXEL_SIZE).to_slices()]


def test_target_is_foreground_with_a_channel_axis_and_weight_is_the_mask():
    labels, mask = volumes()
    batch = request_batch(labels, mask, balance_weights=False)
    target, weight = batch[TARGET], batch[WEIGHT]
    assert target.data.shape == (1, *(OUTPUT_ROI.shape / VOXEL_SIZE))
    assert target.data.dtype == np.float32 and weight.data.dtype == np.float32
    assert target.spec.roi == OUTPUT_ROI and weight.spec.voxel_size == VOXEL_SIZE
    np.testing.assert_array_equal(target.data[0], crop(labels) > 0)
    np.testing.assert_array_equal(weight.data[0], crop(mask))
    assert batch[GT].spec.roi == OUTPUT_ROI


def test_negative_label_ids_are_foreground():
    """Signed labels (e.g. after a background swap) may hold negative object ids."""
    labels, mask = volumes()
    signed = labels.astype(np.int64) * -1
    target = request_batch(signed, mask, balance_weights=False)[TARGET]
    np.testing.assert_array_equal(target.data[0], crop(labels) != 0)


def test_balanced_weight_gives_each_class_half_of_the_masked_weight():
    labels, mask = volumes(seed=1)
    batch = request_batch(labels, mask, balance_weights=True)
    target, weight = batch[TARGET].data[0], batch[WEIGHT].data[0]
    masked = crop(mask) > 0
    np.testing.assert_array_equal(weight > 0, masked)
    positive = target == 1
    assert weight[positive].sum() == pytest.approx(masked.sum() / 2, rel=1e-5)
    assert weight[~positive].sum() == pytest.approx(masked.sum() / 2, rel=1e-5)


def test_balancing_without_foreground_does_not_divide_by_zero():
    target = np.zeros((1, 3, 3, 3), dtype=np.float32)
    weight = np.ones_like(target)
    weight[0, 0] = 0
    balanced = class_balanced_weight(target, weight)
    np.testing.assert_array_equal(balanced, weight)


def test_mask_on_another_voxel_grid_is_a_data_error():
    labels, mask = volumes()
    # gunpowder wraps errors raised in setup(); the DataError is the cause.
    with pytest.raises(gp.PipelineSetupError) as error:
        request_batch(labels, mask, True, mask_voxel_size=Coordinate(4, 4, 4))
    assert isinstance(error.value.__cause__, DataError)
    assert "MASK" in str(error.value.__cause__) and "voxel size" in str(error.value.__cause__)
