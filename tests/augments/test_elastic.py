"""The ``type: elastic`` config validates its values and emits a matching node."""

import gunpowder as gp
import pytest
from pydantic import ValidationError

from voltrain.augments import parse_augment
from voltrain.augments.elastic import ElasticAugmentConfig
from voltrain.nodes.elastic_augment import ElasticAugment

RAW, GT, MASK = gp.ArrayKey("RAW"), gp.ArrayKey("GT"), gp.ArrayKey("MASK")
VALID = dict(type="elastic", control_point_spacing=[400, 80, 80], jitter_sigma=[0, 16, 16])


def test_yaml_entry_becomes_a_node_that_blends_raw_only():
    config = parse_augment({**VALID, "rotation_axes": [1, 2], "max_rotation": 45, "p": 0.5})
    assert isinstance(config, ElasticAugmentConfig)
    node = config.node(RAW, GT, MASK)
    assert isinstance(node, ElasticAugment)
    assert node.raw_key == RAW
    assert node.nearest_keys == [GT, MASK]
    assert list(node.control_point_spacing) == [400, 80, 80]
    assert list(node.jitter_sigma) == [0, 16, 16]
    assert node.rotation_axes == (1, 2)
    assert node.max_rotation == 45
    assert node.p == 0.5


def test_defaults_rotate_freely_in_3d():
    config = parse_augment(VALID)
    assert config.rotate and config.rotation_axes is None and config.max_rotation == 180
    node = config.node(RAW, GT, MASK)
    assert node.rotate and node.rotation_axes is None


@pytest.mark.parametrize(
    "change, key",
    [
        ({"control_point_spacing": [80, 0, 80]}, "control_point_spacing"),
        ({"control_point_spacing": [80, 80]}, "control_point_spacing"),
        ({"jitter_sigma": [16, -1, 16]}, "jitter_sigma"),
        ({"jitter_sigma": [16, 16, 16, 16]}, "jitter_sigma"),
        ({"rotation_axes": [1]}, "rotation_axes"),
        ({"rotation_axes": [1, 1]}, "rotation_axes"),
        ({"rotation_axes": [0, 3]}, "rotation_axes"),
        ({"max_rotation": 200}, "max_rotation"),
        ({"p": 1.5}, "p"),
        ({"sigma": 3}, "sigma"),
    ],
)
def test_invalid_values_are_reported_against_their_key(change, key):
    with pytest.raises(ValidationError) as error:
        parse_augment({**VALID, **change})
    assert key in str(error.value)


def test_spacing_and_sigma_are_required():
    with pytest.raises(ValidationError, match="control_point_spacing"):
        parse_augment({"type": "elastic", "jitter_sigma": [1, 1, 1]})
