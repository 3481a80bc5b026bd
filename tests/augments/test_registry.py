"""The augment registry: built-ins, decorated user classes and entry-point plugins by type."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Literal

import gunpowder as gp
import numpy as np
import pytest
from funlib.persistence import Array

import voltrain.augments.gamma
import voltrain.augments.intensity
import voltrain.augments.intensity_scale_shift
import voltrain.augments.noise
import voltrain.augments.simple
from voltrain.augments import base
from voltrain.augments.base import AugmentConfig, parse_augment, register_augment
from voltrain.errors import ConfigError

BUILTINS = {
    "simple": (voltrain.augments.simple.SimpleAugmentConfig, {}),
    "intensity": (voltrain.augments.intensity.IntensityAugmentConfig, {}),
    "gamma": (voltrain.augments.gamma.GammaAugmentConfig, {}),
    "noise": (voltrain.augments.noise.NoiseAugmentConfig, {"mode": "s&p"}),
    "intensity_scale_shift": (
        voltrain.augments.intensity_scale_shift.IntensityScaleShiftConfig,
        {"scale": 2.0, "shift": -1.0},
    ),
}

PLUGIN_MODULE = "voltrain_test_invert_plugin"
PLUGIN_SOURCE = """
from typing import Literal

import gunpowder as gp

from voltrain.augments.base import AugmentConfig


class InvertNode(gp.BatchFilter):
    def __init__(self, raw_key):
        self.raw_key = raw_key

    def setup(self):
        self.updates(self.raw_key, self.spec[self.raw_key])

    def process(self, batch, request):
        batch[self.raw_key].data = 1.0 - batch[self.raw_key].data


class InvertConfig(AugmentConfig):
    type: Literal["plugin_invert"] = "plugin_invert"

    def node(self, raw_key, gt_key, mask_key):
        return InvertNode(raw_key)
"""


@pytest.fixture
def private_registry():
    """Classes registered by a test vanish after it."""
    with base.AUGMENTS.isolated():
        yield


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_each_builtin_resolves_by_type(name):
    cls, fields = BUILTINS[name]
    config = parse_augment({"type": name, "p": 0.5, **fields})
    assert type(config) is cls
    assert config.p == 0.5
    assert base.registered_augments()[name] is cls


def test_unknown_type_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="'blurr'") as info:
        parse_augment({"type": "blurr"}, where="train.augments[2]")
    assert "train.augments[2]" in str(info.value)
    assert "gamma" in str(info.value), "lists the known types"


def test_missing_type_is_a_config_error():
    with pytest.raises(ConfigError, match="missing 'type'"):
        parse_augment({"p": 0.5})


def test_decorated_user_class_is_found(private_registry):
    @register_augment("mine")
    class MineConfig(AugmentConfig):
        type: Literal["mine"] = "mine"
        strength: float = 1.0

    config = parse_augment({"type": "mine", "strength": 2.0})
    assert isinstance(config, MineConfig) and config.strength == 2.0


def test_two_classes_under_one_name_are_rejected(private_registry):
    @register_augment("twice")
    class First(AugmentConfig):
        type: Literal["twice"] = "twice"

    class Second(AugmentConfig):
        type: Literal["twice"] = "twice"

    with pytest.raises(ValueError, match="already registered"):
        register_augment("twice")(Second)
    with pytest.raises(ValueError, match="already registered"):
        register_augment("gamma")(Second)
    assert register_augment("twice")(First) is First, "re-registering the same class is fine"


def write_plugin_distribution(root: Path) -> None:
    """An installed-looking distribution: a module plus dist-info with an entry point."""
    (root / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    dist_info = root / f"{PLUGIN_MODULE}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {PLUGIN_MODULE}\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""\
            [voltrain.augments]
            plugin_invert = {PLUGIN_MODULE}:InvertConfig
            """
        )
    )


def test_entry_point_plugin_is_found_and_its_node_works(
    tmp_path, monkeypatch, request, private_registry
):
    write_plugin_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(base.AUGMENTS, "entry_points_loaded", False)
    request.addfinalizer(lambda: sys.modules.pop(PLUGIN_MODULE, None))

    config = parse_augment({"type": "plugin_invert", "p": 1.0})

    plugin = sys.modules[PLUGIN_MODULE]
    assert type(config) is plugin.InvertConfig
    assert base._REGISTRY["plugin_invert"] is plugin.InvertConfig
    raw, gt, mask = gp.ArrayKey("RAW"), gp.ArrayKey("GT"), gp.ArrayKey("MASK")
    data = np.linspace(0, 1, 64, dtype=np.float32).reshape(4, 4, 4)
    pipeline = gp.ArraySource(raw, Array(data, voxel_size=(1, 1, 1))) + config.node(raw, gt, mask)
    with gp.build(pipeline):
        batch_request = gp.BatchRequest(random_seed=1)
        batch_request.add(raw, (4, 4, 4))
        batch = pipeline.request_batch(batch_request)
    np.testing.assert_allclose(batch[raw].data, 1.0 - data)
