import gunpowder as gp
import numpy as np
import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from voltrain.nodes.binary_target import BinaryTarget
from voltrain.tasks import BinaryTask, BinaryTaskConfig, TaskConfigs


def sample(seed=0, shape=(2, 1, 4, 5, 6)):
    generator = torch.Generator().manual_seed(seed)
    target = (torch.rand(shape, generator=generator) > 0.5).float()
    weight = (torch.rand(shape, generator=generator) > 0.3).float()
    logits = torch.randn(shape, generator=generator)
    return logits, target, weight


def test_config_is_chosen_by_type_and_builds_a_one_channel_task():
    config = TypeAdapter(TaskConfigs).validate_python({"type": "binary"})
    assert isinstance(config, BinaryTaskConfig) and config.balance_weights
    task = config.build()
    assert isinstance(task, BinaryTask)
    assert task.num_channels == 1
    node = task.target_node(*(gp.ArrayKey(n) for n in ("G", "M", "T", "W")))
    assert isinstance(node, BinaryTarget)
    with pytest.raises(ValidationError):
        TypeAdapter(TaskConfigs).validate_python({"type": "binary", "balance": False})


def test_loss_ignores_voxels_with_zero_weight():
    task = BinaryTaskConfig().build()
    logits, target, weight = sample()
    changed = torch.where(weight == 0, -50 * (2 * target - 1), logits)
    assert torch.any(changed != logits)
    unchanged = task.loss(logits, target, weight).item()
    assert task.loss(changed, target, weight).item() == pytest.approx(unchanged)


def test_loss_is_a_weighted_mean():
    task = BinaryTaskConfig().build()
    logits, target, weight = sample(seed=1)
    weight = 3 * weight
    per_voxel = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target, reduction="none"
    )
    expected = per_voxel[weight > 0].mean()
    assert task.loss(logits, target, weight).item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_is_finite_with_all_zero_weight():
    task = BinaryTaskConfig().build()
    logits, target, weight = sample()
    loss = task.loss(logits, target, torch.zeros_like(weight))
    assert torch.isfinite(loss) and loss.item() == 0.0


def test_perfect_prediction_has_lower_loss_than_wrong_one():
    task = BinaryTaskConfig().build()
    _, target, weight = sample(seed=2)
    perfect = 10 * (2 * target - 1)
    assert task.loss(perfect, target, weight) < 0.01
    assert task.loss(perfect, target, weight) < task.loss(-perfect, target, weight)


def test_dice_of_identical_masks_is_one_and_of_disjoint_masks_zero():
    task = BinaryTaskConfig().build()
    _, target, weight = sample(seed=3)
    assert task.metric(target, target, weight) == {"dice": 1.0, "accuracy": 1.0}
    assert task.metric(1 - target, target, weight) == {"dice": 0.0, "accuracy": 0.0}


def test_dice_on_a_hand_made_case_counts_only_weighted_voxels():
    task = BinaryTaskConfig().build()
    prediction = torch.tensor([0.9, 0.8, 0.2, 0.7, 0.1, 0.9])
    target = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    weight = torch.tensor([1.0, 1.0, 1.0, 2.0, 1.0, 0.0])
    # Weighted voxels: tp = 2 (0, 3), fp = 1 (1), fn = 1 (2), tn = 1 (4); voxel 5 ignored.
    metric = task.metric(prediction, target, weight)
    assert metric["dice"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert metric["accuracy"] == pytest.approx(3 / 5)


def test_metric_without_weighted_voxels_is_nan():
    task = BinaryTaskConfig().build()
    _, target, weight = sample()
    metric = task.metric(target, target, torch.zeros_like(weight))
    assert all(np.isnan(value) for value in metric.values())


def test_activation_maps_logits_to_probabilities():
    task = BinaryTaskConfig().build()
    probabilities = task.activation(torch.tensor([-100.0, 0.0, 100.0]))
    torch.testing.assert_close(probabilities, torch.tensor([0.0, 0.5, 1.0]))
