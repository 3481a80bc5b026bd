import math

import gunpowder as gp
import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from voltrain.nodes.distance_target import DistanceTarget
from voltrain.tasks import DistancesTask, DistancesTaskConfig, TaskConfigs


def sample(seed=0, shape=(2, 1, 4, 5, 6)):
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=generator) * 2 - 1
    weight = (torch.rand(shape, generator=generator) > 0.3).float()
    logits = torch.randn(shape, generator=generator)
    return logits, target, weight


def test_config_is_chosen_by_type_with_a_context_of_three_scales_by_default():
    config = TypeAdapter(TaskConfigs).validate_python({"type": "distances", "scale": 40})
    assert isinstance(config, DistancesTaskConfig)
    task = config.build()
    assert task.context == pytest.approx(120.0)
    assert isinstance(task, DistancesTask) and task.num_channels == 1
    node = task.target_node(*(gp.ArrayKey(n) for n in ("G", "M", "T", "W")))
    assert isinstance(node, DistanceTarget)
    assert node.scale == 40 and node.context == 120
    assert DistancesTaskConfig(scale=10, context=25).build().context == 25


@pytest.mark.parametrize(
    "raw, key",
    [({}, "scale"), ({"scale": 0}, "scale"), ({"scale": 5, "context": -1}, "context")],
)
def test_bad_config_names_the_key(raw, key):
    with pytest.raises(ValidationError) as error:
        TypeAdapter(TaskConfigs).validate_python({"type": "distances", **raw})
    assert key in str(error.value)


def test_loss_is_the_weighted_squared_error_of_tanh_logits():
    task = DistancesTaskConfig(scale=5).build()
    logits, target, weight = sample()
    weight = 2.5 * weight
    expected = ((torch.tanh(logits) - target) ** 2)[weight > 0].mean()
    assert task.loss(logits, target, weight).item() == pytest.approx(expected.item(), rel=1e-5)
    perfect = torch.atanh(target.clamp(-0.999, 0.999))
    assert task.loss(perfect, target, weight).item() < 1e-6


def test_activation_is_tanh_and_metrics_count_weighted_voxels():
    task = DistancesTaskConfig(scale=5).build()
    assert torch.equal(
        task.activation(torch.tensor([0.5, -2.0])), torch.tanh(torch.tensor([0.5, -2.0]))
    )
    prediction = torch.tensor([0.5, -0.2, 0.3, -0.9, 0.1])
    target = torch.tensor([0.4, 0.3, -0.1, -0.5, 0.9])
    weight = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    metric = task.metric(prediction, target, weight)
    # signs agree at voxels 0 and 3 of the 4 weighted ones
    assert metric["sign_accuracy"] == pytest.approx(0.5)
    assert metric["distance_error"] == pytest.approx((0.1 + 0.5 + 0.4 + 0.4) / 4)
    assert all(math.isnan(v) for v in task.metric(prediction, target, 0 * weight).values())


def test_distance_error_is_minimised_when_it_picks_best_pt():
    from voltrain.trainers.config import ValidationConfig

    task = DistancesTaskConfig(scale=5).build()
    assert task.best_mode(ValidationConfig(metric="distance_error")) == "min"
    assert task.best_mode(ValidationConfig(metric="validation_sign_accuracy")) == "max"
    assert task.best_mode(ValidationConfig(metric="distance_error", best="max")) == "max"


def test_num_classes_gives_a_channel_per_foreground_class():
    task = DistancesTaskConfig(scale=8, num_classes=4).build()
    assert task.num_channels == 3
    assert task.target_node(*(gp.ArrayKey(n) for n in ("G", "M", "T", "W"))).num_classes == 4
    with pytest.raises(ValidationError, match="num_classes"):
        DistancesTaskConfig(scale=8, num_classes=1)
