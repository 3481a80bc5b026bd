"""Per-level U-Net kernel sizes: the shape arithmetic follows the real network, and a
kernel list that does not match the levels is one line naming ``model.kernel_sizes``."""

from __future__ import annotations

import pytest
import torch
import yaml

from tests.helpers import experiment_dict
from voltrain.errors import ConfigError
from voltrain.experiment import parse_config
from voltrain.models.unet import UNetConfig, axis_output_size, build_model, valid_input_shape

ANISOTROPIC = UNetConfig(
    num_fmaps=2,
    fmap_inc_factor=2,
    downsample_factors=[[1, 3, 3], [1, 3, 3], [3, 3, 3]],
    kernel_sizes=[[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]],
)


def meta_output_shape(config: UNetConfig, input_shape) -> tuple[int, ...]:
    """The real network's output shape, run on the meta device (nothing allocated)."""
    with torch.device("meta"):
        network = build_model(config, 1, 2)
        return tuple(network(torch.empty(1, 1, *input_shape)).shape[2:])


@pytest.mark.parametrize("approx", [(1, 1, 1), (20, 200, 180), (33, 250, 301)])
def test_computed_output_shapes_are_the_real_networks(approx):
    input_shape = valid_input_shape(ANISOTROPIC, approx)
    assert meta_output_shape(ANISOTROPIC, input_shape) == tuple(
        ANISOTROPIC.output_shape(input_shape)
    )


def test_the_kernels_of_each_level_are_used_on_the_down_and_the_up_path():
    network = build_model(ANISOTROPIC, 1, 2)
    down = [
        [c.kernel_size for c in b if isinstance(c, torch.nn.Conv3d)] for b in network.down_blocks
    ]
    up = [[c.kernel_size for c in b if isinstance(c, torch.nn.Conv3d)] for b in network.up_blocks]
    assert down == [[(1, 3, 3)] * 2, [(1, 3, 3)] * 2, [(3, 3, 3)] * 2, [(3, 3, 3)] * 2]
    assert up == [[(1, 3, 3)] * 2, [(1, 3, 3)] * 2, [(3, 3, 3)] * 2]


def test_in_plane_top_kernels_need_less_z_context_than_isotropic_ones():
    isotropic = ANISOTROPIC.model_copy(update={"kernel_sizes": None})
    # the smallest valid z input, minus its output: the z voxels of context
    contexts = []
    for config in (ANISOTROPIC, isotropic):
        size = next(s for s in range(1, 200) if axis_output_size(config, 0, s) is not None)
        contexts.append(size - axis_output_size(config, 0, size))
    assert contexts[0] < contexts[1]
    # the in-plane axes keep their 3 x 3 kernels at every level
    assert axis_output_size(ANISOTROPIC, 1, 322) == axis_output_size(isotropic, 1, 322) == 54


@pytest.mark.parametrize(
    ("kernel_sizes", "extra", "message"),
    [
        ([[1, 3, 3], [3, 3, 3]], {}, "kernel_sizes holds 2 kernels but the U-Net has 3 levels"),
        ([[1, 3, 3], [3, 3], [3, 3, 3]], {}, "level 1: expected 3 odd sizes"),
        ([[1, 3, 3], [3, 3, 3], [3, 4, 3]], {}, "level 2: expected 3 odd sizes"),
        ([[1, 3, 3]] * 3, {"kernel_size": 5}, "give only one of them"),
    ],
)
def test_a_wrong_kernel_list_is_one_line_naming_the_key(volume, kernel_sizes, extra, message):
    config = experiment_dict(volume)
    config["model"].update(downsample_factors=[[1, 2, 2], [2, 2, 2]], **extra)
    config["model"]["kernel_sizes"] = kernel_sizes
    with pytest.raises(ConfigError) as caught:
        parse_config(config, source="experiment.yaml")
    text = str(caught.value)
    assert text.startswith("experiment.yaml: model.kernel_sizes") and "\n" not in text
    assert message in text


def test_a_saved_config_with_kernel_sizes_reads_back(volume):
    config = experiment_dict(volume)
    config["model"].update(downsample_factors=[[1, 2, 2]], kernel_sizes=[[1, 3, 3], [3, 3, 3]])
    parsed = parse_config(config)
    assert parse_config(yaml.safe_load(parsed.to_yaml())).model == parsed.model
