import math

import gunpowder as gp
import numpy as np
import pytest
import torch
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array
from pydantic import TypeAdapter, ValidationError

from voltrain.errors import DataError
from voltrain.nodes.multiclass_target import MulticlassTarget
from voltrain.tasks import MulticlassTask, MulticlassTaskConfig, TaskConfigs

GT, MASK, TARGET, WEIGHT = (gp.ArrayKey(n) for n in ("GT", "MASK", "TARGET", "WEIGHT"))
VOXEL_SIZE = Coordinate(4, 2, 2)
IGNORE = 255


def classes_and_mask(seed=0, shape=(5, 6, 7)):
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 4, size=shape).astype(np.uint8)
    classes[rng.random(shape) < 0.1] = IGNORE
    mask = (rng.random(shape) > 0.25).astype(np.uint8)
    return classes, mask


def request(classes, mask, node):
    sources = tuple(
        gp.ArraySource(key, Array(data, (0, 0, 0), VOXEL_SIZE))
        for key, data in ((GT, classes), (MASK, mask))
    )
    pipeline = sources + gp.MergeProvider() + node
    batch_request = gp.BatchRequest()
    roi = Roi((0, 0, 0), Coordinate(classes.shape) * VOXEL_SIZE)
    batch_request[TARGET] = gp.ArraySpec(roi=roi)
    batch_request[WEIGHT] = gp.ArraySpec(roi=roi)
    with gp.build(pipeline):
        return pipeline.request_batch(batch_request)


def test_config_is_chosen_by_type_and_has_a_channel_per_class():
    config = TypeAdapter(TaskConfigs).validate_python(
        {"type": "multiclass", "num_classes": 4, "ignore_label": IGNORE}
    )
    assert isinstance(config, MulticlassTaskConfig)
    task = config.build()
    assert isinstance(task, MulticlassTask) and task.num_channels == 4
    assert isinstance(task.target_node(GT, MASK, TARGET, WEIGHT), MulticlassTarget)


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"num_classes": 1}, "num_classes"),
        ({}, "num_classes"),
        ({"num_classes": 3, "class_weights": [1, 2]}, "class_weights"),
        ({"num_classes": 2, "class_weights": [0, 0]}, "class_weights"),
        ({"num_classes": 2, "class_weights": [1, -1]}, "class_weights"),
        ({"num_classes": 3, "ignore_label": 2}, "ignore_label"),
    ],
)
def test_bad_config_names_the_key(raw, key):
    with pytest.raises(ValidationError) as error:
        TypeAdapter(TaskConfigs).validate_python({"type": "multiclass", **raw})
    assert key in str(error.value)


def test_target_is_one_hot_and_weight_is_class_weight_times_mask_zero_on_ignore():
    classes, mask = classes_and_mask()
    class_weights = [0.5, 1.0, 2.0, 4.0]
    config = MulticlassTaskConfig(num_classes=4, class_weights=class_weights, ignore_label=IGNORE)
    batch = request(classes, mask, config.build().target_node(GT, MASK, TARGET, WEIGHT))
    target, weight = batch[TARGET].data, batch[WEIGHT].data
    assert target.dtype == np.float32 and target.shape == (4, *classes.shape)
    assert weight.dtype == np.float32 and weight.shape == (1, *classes.shape)
    ignored = classes == IGNORE
    for k in range(4):
        np.testing.assert_array_equal(target[k], classes == k)
    np.testing.assert_array_equal(target.sum(axis=0), ~ignored)
    np.testing.assert_array_equal(weight[0][ignored], 0)
    np.testing.assert_array_equal(weight[0][mask == 0], 0)
    kept = ~ignored & (mask > 0)
    np.testing.assert_array_equal(weight[0][kept], np.asarray(class_weights)[classes[kept]])


def test_a_class_id_beyond_num_classes_is_a_data_error_naming_it():
    classes, mask = classes_and_mask()
    classes[0, 0, 0] = 7
    node = MulticlassTarget(GT, MASK, TARGET, WEIGHT, [1.0, 1.0, 1.0, 1.0], IGNORE)
    with pytest.raises(Exception) as error:
        request(classes, mask, node)
    cause = error.value
    while cause is not None and not isinstance(cause, DataError):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None and "[7]" in str(cause) and "num_classes" in str(cause)


def test_loss_equals_torch_cross_entropy_with_class_weights_and_ignore_index():
    classes, mask = classes_and_mask(seed=1, shape=(2, 4, 5, 6))
    class_weights = [0.3, 1.0, 2.0, 5.0]
    task = MulticlassTaskConfig(
        num_classes=4, class_weights=class_weights, ignore_label=IGNORE
    ).build()
    batch = request(classes[0], np.ones_like(mask[0]), task.target_node(GT, MASK, TARGET, WEIGHT))
    target = torch.from_numpy(batch[TARGET].data)[None]
    weight = torch.from_numpy(batch[WEIGHT].data)[None]
    logits = torch.randn(1, 4, *classes.shape[1:], generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.cross_entropy(
        logits,
        torch.from_numpy(classes[:1].astype(np.int64)),
        weight=torch.tensor(class_weights),
        ignore_index=IGNORE,
    )
    assert task.loss(logits, target, weight).item() == pytest.approx(expected.item(), rel=1e-5)


def test_activation_is_softmax_and_metrics_use_the_argmax():
    task = MulticlassTaskConfig(num_classes=3).build()
    logits = torch.randn(2, 3, 2, 2, 2)
    probabilities = task.activation(logits)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2, 2, 2, 2))
    # four voxels: truth 0, 1, 2, 1; predicted 0, 1, 1, 1; a fifth with weight 0
    target = torch.eye(3)[[0, 1, 2, 1, 2]].T[None, :, :, None, None]
    prediction = torch.eye(3)[[0, 1, 1, 1, 0]].T[None, :, :, None, None]
    weight = torch.tensor([1.0, 1, 1, 1, 0])[None, None, :, None, None]
    metric = task.metric(prediction, target, weight)
    assert metric["accuracy"] == pytest.approx(3 / 4)
    assert metric["dice_0"] == 1.0
    assert metric["dice_1"] == pytest.approx(2 * 2 / (3 + 2))
    assert metric["dice_2"] == 0.0
    assert metric["mean_dice"] == pytest.approx((0.8 + 0.0) / 2)
    assert all(math.isnan(v) for v in task.metric(prediction, target, 0 * weight).values())
