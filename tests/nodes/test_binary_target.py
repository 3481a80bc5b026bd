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


def one_positive_voxel(shape=(1, 10, 10, 10)):
    target = np.zeros(shape, dtype=np.float32)
    target[0, 4, 5, 6] = 1
    return target, np.ones_like(target)


def test_clipping_bounds_the_weight_of_one_positive_voxel():
    target, weight = one_positive_voxel()  # positive fraction 1/1000, below the 0.05 clip
    balanced = class_balanced_weight(target, weight, (0.05, 0.95))
    # positives weigh 1 / (2 * 0.05), negatives 1 / (2 * (1 - 0.05)), per unit of mask
    assert balanced[target == 1].item() == pytest.approx(10.0)
    np.testing.assert_allclose(balanced[target == 0], 1 / 1.9, rtol=1e-6)
    share = balanced[target == 1].sum() / balanced.sum()
    assert share == pytest.approx(10 / (10 + 999 / 1.9))
    assert share < 0.02
    # unclipped, the one voxel carries half of the loss
    unclipped = class_balanced_weight(target, weight, None)
    assert unclipped[target == 1].sum() == pytest.approx(unclipped.sum() / 2)


def test_clipping_is_the_default_and_follows_the_mask_weight():
    target, weight = one_positive_voxel()
    weight[0, :2] = 0  # 800 trusted voxels, one positive
    balanced = class_balanced_weight(target, weight)
    assert balanced[target == 1].item() == pytest.approx(10.0)
    np.testing.assert_array_equal(balanced[weight == 0], 0)
    # total = 1 * 10 + 799 / 1.9: more than the 800 of the mask, as the clip leaves it
    assert balanced.sum() == pytest.approx(10 + 799 / 1.9, rel=1e-5)


def test_fraction_inside_the_clip_keeps_halves_and_total():
    target = np.zeros((2, 20), dtype=np.float32)
    target[0, :3] = 1  # fraction 0.15: inside [0.05, 0.95], balanced as without a clip
    target[1, :19] = 1  # fraction 0.95: on the bound
    weight = np.ones_like(target)
    balanced = class_balanced_weight(target, weight, (0.05, 0.95))
    np.testing.assert_allclose(balanced, class_balanced_weight(target, weight, None), rtol=1e-6)
    for channel in range(2):
        positive = target[channel] == 1
        assert balanced[channel, positive].sum() == pytest.approx(10.0)
        assert balanced[channel, ~positive].sum() == pytest.approx(10.0)


def test_balance_clip_reaches_the_node_through_the_task_config():
    from voltrain.tasks import BinaryTaskConfig

    labels = np.zeros(SHAPE, dtype=np.uint32)
    labels[3, 4, 5] = 7  # one foreground voxel of the 4 * 4 * 6 output
    mask = np.ones(SHAPE, dtype=np.uint8)
    batches = {}
    for clip in ((0.05, 0.95), None):
        node = BinaryTaskConfig(balance_clip=clip).build().target_node(GT, MASK, TARGET, WEIGHT)
        sources = tuple(
            gp.ArraySource(key, Array(data, OFFSET, VOXEL_SIZE))
            for key, data in ((GT, labels), (MASK, mask))
        )
        pipeline = sources + gp.MergeProvider() + node
        request = gp.BatchRequest()
        request[WEIGHT] = gp.ArraySpec(roi=OUTPUT_ROI)
        with gp.build(pipeline):
            batches[clip] = pipeline.request_batch(request)[WEIGHT].data
    assert batches[(0.05, 0.95)].max() == pytest.approx(10.0)
    assert batches[None].max() == pytest.approx(96 / 2)
