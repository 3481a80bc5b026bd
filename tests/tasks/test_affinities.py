import gunpowder as gp
import numpy as np
import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from voltrain.nodes.affinity_target import AffinityTarget
from voltrain.tasks import AffinitiesTask, AffinitiesTaskConfig, TaskConfigs


def sample(channels=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = (2, channels, 4, 5, 6)
    target = (torch.rand(shape, generator=generator) > 0.5).float()
    weight = (torch.rand(shape, generator=generator) > 0.3).float()
    logits = torch.randn(shape, generator=generator)
    return logits, target, weight


def test_config_is_chosen_by_type_and_sets_channels():
    config = TypeAdapter(TaskConfigs).validate_python(
        {"type": "affinities", "neighborhood": [[-1, 0, 0], [0, -3, 0], [0, 2, -9], [0, 0, 1]]}
    )
    assert isinstance(config, AffinitiesTaskConfig)
    task = config.build()
    assert isinstance(task, AffinitiesTask)
    assert task.num_channels == 4
    node = task.target_node(*(gp.ArrayKey(n) for n in ("G", "M", "T", "W")))
    assert isinstance(node, AffinityTarget)


def test_default_is_nearest_neighbour_affinities():
    task = AffinitiesTaskConfig().build()
    assert task.num_channels == 3


@pytest.mark.parametrize(
    "neighborhood", [[], [[0, 0, 0]], [[1, 0]], [[1, 0, 0], [1, 0, 0]], [[1, 0, 0, 0]]]
)
def test_bad_neighbourhoods_are_rejected(neighborhood):
    with pytest.raises(ValidationError, match="neighborhood"):
        AffinitiesTaskConfig(neighborhood=neighborhood)


def test_unknown_loss_is_rejected():
    with pytest.raises(ValidationError, match="loss"):
        AffinitiesTaskConfig(loss="dice")


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_loss_ignores_affinities_with_zero_weight(loss):
    task = AffinitiesTaskConfig(loss=loss).build()
    logits, target, weight = sample()
    changed = torch.where(weight == 0, -50 * (2 * target - 1), logits)
    assert torch.any(changed != logits)
    unchanged = task.loss(logits, target, weight).item()
    assert task.loss(changed, target, weight).item() == pytest.approx(unchanged)


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_perfect_prediction_has_lower_loss_than_wrong_one(loss):
    task = AffinitiesTaskConfig(loss=loss).build()
    _, target, weight = sample(seed=1)
    perfect = 10 * (2 * target - 1)
    assert task.loss(perfect, target, weight) < 0.01
    assert task.loss(-perfect, target, weight) > 0.9 * (1 if loss == "mse" else 9)


def test_mse_loss_compares_the_sigmoid_with_the_target():
    task = AffinitiesTaskConfig(loss="mse").build()
    logits = torch.zeros(1, 3, 2, 2, 2)
    target = torch.ones_like(logits)
    assert task.loss(logits, target, torch.ones_like(logits)).item() == pytest.approx(0.25)


def test_affinity_accuracy_on_a_hand_made_case():
    task = AffinitiesTaskConfig().build()
    prediction = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    weight = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.5, 0.0]])
    # Weighted: (0.9,1) ok, (0.1,0) ok, (0.6,0) wrong, (0.2,0) ok; the rest ignored.
    assert task.metric(prediction, target, weight) == {"affinity_accuracy": 0.75}
    _, target, weight = sample(seed=2)
    assert task.metric(target, target, weight) == {"affinity_accuracy": 1.0}
    assert np.isnan(task.metric(target, target, torch.zeros_like(weight))["affinity_accuracy"])
