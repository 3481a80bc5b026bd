"""The lsd and affinities+lsd tasks: configs, channel layout, losses and metrics."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
import pytest
import torch
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array
from pydantic import TypeAdapter

from tests.helpers import experiment_dict
from voltrain.errors import ConfigError
from voltrain.experiment import parse_config
from voltrain.nodes.affinity_target import AffinityTarget
from voltrain.nodes.lsd_target import LsdTarget
from voltrain.tasks import (
    AffinitiesLsdTaskConfig,
    AffinitiesTaskConfig,
    LsdTaskConfig,
    TaskConfigs,
)

NEIGHBORHOOD = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, 0, -3]]
VOXEL_SIZE = Coordinate((16, 8, 8))


def sample(channels: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shape = (2, channels, 4, 5, 6)
    target = torch.rand(shape, generator=generator)
    weight = (torch.rand(shape, generator=generator) > 0.3).float()
    logits = 3 * torch.randn(shape, generator=generator)
    return logits, target, weight


def test_configs_are_chosen_by_type_and_set_channels():
    adapter = TypeAdapter(TaskConfigs)
    lsd = adapter.validate_python({"type": "lsd", "sigma": 40})
    assert isinstance(lsd, LsdTaskConfig) and lsd.sigma == [40.0, 40.0, 40.0]
    assert lsd.build().num_channels == 10 and lsd.affinity_channels() == []
    raw = {"type": "affinities+lsd", "sigma": [40, 24, 24], "neighborhood": NEIGHBORHOOD}
    both = adapter.validate_python(raw)
    assert isinstance(both, AffinitiesLsdTaskConfig) and both.lsd_weight == 1.0
    assert both.build().num_channels == 14
    assert both.affinity_channels() == [0, 1, 2, 3]  # what segmentation reads


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"type": "lsd"}, "task.sigma: required key is missing"),
        ({"type": "lsd", "sigma": [40, 24]}, "task.sigma: expected one value or 3"),
        ({"type": "lsd", "sigma": 0}, "task.sigma: must be positive"),
        ({"type": "lsd", "sigma": 40, "downsample": 0}, "task.downsample"),
        ({"type": "lsd", "sigma": 40, "lsd_weight": 1}, "task.lsd_weight: unknown key"),
        ({"type": "affinities+lsd", "sigma": 40, "lsd_weight": -1}, "task.lsd_weight"),
        ({"type": "affinities+lsd", "sigma": 40, "neighborhood": [[0, 0, 0]]}, "neighborhood"),
    ],
)
def test_a_bad_task_config_is_one_line_naming_the_key(task, message, tmp_path):
    raw = experiment_dict(tmp_path)
    raw["task"] = task
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_lsd_loss_is_the_weighted_squared_error_of_the_sigmoid():
    task = LsdTaskConfig(sigma=40).build()
    logits, target, weight = sample(10)
    expected = (weight * (torch.sigmoid(logits) - target) ** 2).sum() / weight.sum()
    assert task.loss(logits, target, weight).item() == pytest.approx(expected.item(), rel=1e-5)
    changed = torch.where(weight == 0, logits + 5, logits)  # unweighted voxels do not count
    assert task.loss(changed, target, weight).item() == pytest.approx(expected.item(), rel=1e-5)
    assert task.loss(logits, target, torch.zeros_like(weight)).item() == 0  # not NaN
    metric = task.metric(torch.sigmoid(logits), target, weight)
    assert metric["lsd_mse"] == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_multitask_loss_is_affinity_loss_plus_weighted_lsd_loss(loss):
    config = AffinitiesLsdTaskConfig(sigma=40, neighborhood=NEIGHBORHOOD, loss=loss, lsd_weight=0.3)
    task = config.build()
    logits, target, weight = sample(14, seed=1)
    target[:, :4] = (target[:, :4] > 0.5).float()
    affinities = AffinitiesTaskConfig(neighborhood=NEIGHBORHOOD, loss=loss).build()
    lsd = LsdTaskConfig(sigma=40).build()
    parts = (
        [t[:, :4] for t in (logits, target, weight)],
        [t[:, 4:] for t in (logits, target, weight)],
    )
    expected = affinities.loss(*parts[0]) + 0.3 * lsd.loss(*parts[1])
    assert task.loss(logits, target, weight).item() == pytest.approx(expected.item(), rel=1e-6)
    metric = task.metric(torch.sigmoid(logits), target, weight)
    assert set(metric) == {"affinity_accuracy", "lsd_mse"}
    assert metric == pytest.approx(
        {
            **affinities.metric(torch.sigmoid(parts[0][0]), *parts[0][1:]),
            **lsd.metric(torch.sigmoid(parts[1][0]), *parts[1][1:]),
        }
    )


def _request(graph, keys, roi):
    request = gp.BatchRequest()
    for key in keys:
        request[key] = gp.ArraySpec(roi=roi)
    with gp.build(graph):
        return graph.request_batch(request)


def test_multitask_target_is_the_affinities_then_the_descriptors():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.repeat(rng.integers(0, 5, (6, 6, 6)), 4, axis=1), 4, axis=2)
    labels = np.repeat(labels, 2, axis=0).astype(np.uint64)  # 12 x 24 x 24
    mask = (rng.random(labels.shape) > 0.2).astype(np.uint8)
    keys = {name: gp.ArrayKey(f"MT_{name}") for name in ("GT", "MASK", "T", "W", "AT", "AW")}
    keys.update({name: gp.ArrayKey(f"MT_{name}") for name in ("LT", "LW")})

    def sources():
        return (
            gp.ArraySource(keys["GT"], Array(labels, (0, 0, 0), VOXEL_SIZE), interpolatable=False),
            gp.ArraySource(keys["MASK"], Array(mask, (0, 0, 0), VOXEL_SIZE), interpolatable=False),
        ) + gp.MergeProvider()

    config = AffinitiesLsdTaskConfig(sigma=[32, 16, 16], neighborhood=NEIGHBORHOOD)
    node = config.build().target_node(keys["GT"], keys["MASK"], keys["T"], keys["W"])
    roi = Roi((32, 32, 40), (96, 96, 80))
    batch = _request(sources() + node, (keys["T"], keys["W"]), roi)
    target, weight = batch[keys["T"]], batch[keys["W"]]
    assert target.spec.roi == weight.spec.roi == roi
    assert target.data.shape == weight.data.shape == (14, 6, 12, 10)
    assert target.data.dtype == weight.data.dtype == np.float32

    reference = (
        sources()
        + AffinityTarget(keys["GT"], keys["MASK"], keys["AT"], keys["AW"], NEIGHBORHOOD, True)
        + LsdTarget(keys["GT"], keys["MASK"], keys["LT"], keys["LW"], [32, 16, 16])
    )
    parts = _request(reference, [keys[n] for n in ("AT", "AW", "LT", "LW")], roi)
    np.testing.assert_array_equal(target.data[:4], parts[keys["AT"]].data)
    np.testing.assert_array_equal(weight.data[:4], parts[keys["AW"]].data)
    np.testing.assert_array_equal(target.data[4:], parts[keys["LT"]].data)
    np.testing.assert_array_equal(weight.data[4:], parts[keys["LW"]].data)
    assert target.data[4:].any() and weight.data[4:].any()


def test_the_best_checkpoint_keeps_the_lowest_lsd_error(tmp_path):
    raw = experiment_dict(tmp_path, validation={"metric": "lsd_mse"})
    raw["task"] = {"type": "affinities+lsd", "sigma": 40}
    assert parse_config(raw).trainer.validation.best_mode == "min"
