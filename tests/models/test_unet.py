import pytest
import torch
from pydantic import ValidationError

from voltrain.errors import ConfigError
from voltrain.models.unet import UNetConfig, build_model, output_shape, valid_input_shape

TINY = {"num_fmaps": 2, "fmap_inc_factor": 2}


@pytest.fixture
def one_thread():
    """Torch's thread pool only slows these tiny convolutions down on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CONFIGS = [
    UNetConfig(**TINY),
    UNetConfig(**TINY, downsample_factors=[[1, 2, 2], [2, 2, 2]]),
    UNetConfig(**TINY, downsample_factors=[[1, 3, 3]], kernel_size=[1, 3, 3]),
    UNetConfig(**TINY, downsample_factors=[[2, 2, 2]], num_convs_per_level=1, upsample="nearest"),
    UNetConfig(**TINY, downsample_factors=[[3, 3, 3]], batch_norm=True),
    UNetConfig(**TINY, downsample_factors=[[2, 2, 2]], output_downsample=[2, 2, 2]),
    UNetConfig(**TINY, downsample_factors=[[1, 2, 2]], output_downsample=[1, 2, 2]),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_forward_returns_the_predicted_output_shape(config, one_thread):
    input_shape = valid_input_shape(config, (10, 21, 25))
    assert all(s >= a for s, a in zip(input_shape, (10, 21, 25), strict=True))
    model = build_model(config, in_channels=2, out_channels=3).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 2, *input_shape))
    assert logits.shape == (2, 3, *output_shape(config, input_shape))


def test_default_config_maps_68_to_28_and_44_is_the_smallest_input():
    config = UNetConfig()
    assert output_shape(config, (68, 68, 68)) == (28, 28, 28)
    assert valid_input_shape(config, (1, 45, 68)) == (44, 48, 68)
    with pytest.raises(ConfigError):
        output_shape(config, (40, 40, 40))


@pytest.mark.parametrize("shape", [(67, 68, 68), (68, 4, 68), (68, 68, 0)])
def test_invalid_input_shape_names_the_config_key_and_suggests_valid_shapes(shape):
    config = UNetConfig()
    with pytest.raises(ConfigError) as error:
        output_shape(config, shape)
    message = str(error.value)
    assert "trainer.input_shape" in message and "\n" not in message
    suggested = valid_input_shape(config, shape)
    assert str(list(suggested)) in message
    output_shape(config, suggested)


def test_forward_on_an_invalid_shape_raises_config_error():
    model = build_model(UNetConfig(**TINY), 1, 1)
    with pytest.raises(ConfigError, match="trainer.input_shape"):
        model(torch.zeros(1, 1, 45, 44, 44))


@pytest.mark.parametrize("config", [CONFIGS[3], CONFIGS[4]])
def test_blockwise_prediction_matches_one_pass(config, one_thread):
    """Tiling the output at its own size gives the same values as one larger pass."""
    model = build_model(config, 1, 1).eval()
    small = valid_input_shape(config, (1, 1, 1))
    block = output_shape(config, small)
    large = (small[0], small[1], small[2] + block[2])
    assert output_shape(config, large)[2] == 2 * block[2]
    raw = torch.rand(1, 1, *large)
    with torch.no_grad():
        whole = model(raw)
        left = model(raw[..., : small[2]])
        right = model(raw[..., block[2] :])
    torch.testing.assert_close(torch.cat([left, right], dim=-1), whole)


def test_tiny_unet_overfits_one_sample(one_thread):
    torch.manual_seed(0)
    config = UNetConfig(num_fmaps=4, fmap_inc_factor=2, downsample_factors=[[2, 2, 2]])
    model = build_model(config, 1, 1)
    input_shape = valid_input_shape(config, (28, 28, 28))
    out = output_shape(config, input_shape)
    # A noisy bright ball whose foreground the network must segment.
    grid = torch.meshgrid(*[torch.arange(s) - s / 2 for s in input_shape], indexing="ij")
    ball = (sum(g**2 for g in grid) < 6.5**2).float()
    raw = (ball + 0.1 * torch.randn(input_shape))[None, None]
    crop = [(i - o) // 2 for i, o in zip(input_shape, out, strict=True)]
    target = ball[tuple(slice(c, c + o) for c, o in zip(crop, out, strict=True))][None, None]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(raw), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    "field",
    [
        {"num_fmaps": 0},
        {"fmap_inc_factor": 0},
        {"num_convs_per_level": 0},
        {"kernel_size": 2},
        {"kernel_size": [3, 3]},
        {"downsample_factors": [[2, 2]]},
        {"downsample_factors": [[2, 0, 2]]},
        {"upsample": "bilinear"},
        {"num_fmap": 4},
    ],
)
def test_bad_config_values_are_rejected(field):
    with pytest.raises(ValidationError):
        UNetConfig(**field)


@pytest.mark.parametrize("config", [CONFIGS[5], CONFIGS[6]])
def test_output_downsample_gives_coarser_output_that_tiles_like_one_pass(config, one_thread):
    """Output voxels are ``output_downsample`` input voxels; blocks still tile seamlessly."""
    factor = config.output_downsample
    small = valid_input_shape(config, (1, 1, 1))
    block = output_shape(config, small)
    plain = UNetConfig(**config.model_dump(exclude={"output_downsample"}))
    assert tuple(block) == tuple(
        o // f for o, f in zip(output_shape(plain, small), factor, strict=True)
    )
    model = build_model(config, 1, 1).eval()
    step = block[2] * factor[2]
    large = (small[0], small[1], small[2] + step)
    raw = torch.rand(1, 1, *large)
    with torch.no_grad():
        whole = model(raw)
        left = model(raw[..., : small[2]])
        right = model(raw[..., step:])
    assert whole.shape[-1] == 2 * block[2]
    torch.testing.assert_close(torch.cat([left, right], dim=-1), whole)


def test_output_not_divisible_by_output_downsample_suggests_valid_shapes():
    config = UNetConfig(**TINY, downsample_factors=[[2, 2, 2]], output_downsample=[1, 1, 3])
    with pytest.raises(ConfigError, match=r"x = 36.*output_downsample 3") as error:
        output_shape(config, (36, 36, 36))
    suggested = valid_input_shape(config, (36, 36, 36))
    assert str(list(suggested)) in str(error.value)
    assert (
        output_shape(config, suggested)[2] * 3
        == output_shape(UNetConfig(**TINY, downsample_factors=[[2, 2, 2]]), suggested)[2]
    )
