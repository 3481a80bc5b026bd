"""BlurAugment: out-of-focus sections, anisotropic 3D blur and motion blur, raw only, seeded."""

from __future__ import annotations

import numpy as np
import pytest
from funlib.geometry import Coordinate

from tests.helpers.section_pipeline import RAW, assert_labels_kept, run
from voltrain.kernels.augment_rng import augment_rng
from voltrain.nodes.blur_augment import BlurAugment, BlurParams, line_kernel
from voltrain.nodes.raw_section_augment import SampleGeometry

TEXTURE = np.random.default_rng(0).random((12, 32, 32), dtype=np.float32)


def drawn(node: BlurAugment, seed: int, raw: np.ndarray, voxel_size) -> BlurParams:
    """The parameters the node draws for a whole-array request with ``seed``."""
    geometry = SampleGeometry(Coordinate(raw.shape[-3:]), Coordinate(voxel_size))
    return node.make_params(augment_rng(seed, node.rng_stream), geometry)


def gradient_energy(image: np.ndarray) -> float:
    return float(sum((g**2).sum() for g in np.gradient(image.astype(np.float64))))


def impulse(shape) -> np.ndarray:
    data = np.zeros(shape, dtype=np.float32)
    data[tuple(n // 2 for n in shape)] = 1.0
    return data


def spatial_variance(data: np.ndarray, axis: int) -> float:
    """Variance (voxels^2) of ``data``'s mass along ``axis``."""
    profile = data.sum(axis=tuple(a for a in range(data.ndim) if a != axis))
    coords = np.arange(data.shape[axis])
    mean = (profile * coords).sum() / profile.sum()
    return float((profile * (coords - mean) ** 2).sum() / profile.sum())


def test_per_section_blur_smooths_only_the_drawn_sections_and_keeps_their_mean():
    node = BlurAugment(RAW, sigma_min=6.0, sigma_max=10.0, section_probability=0.4)
    voxel_size = (40, 4, 4)
    (batch,) = run(node, [5], TEXTURE, voxel_size)
    out = batch[RAW].data
    params = node._params  # the draw of the request just made
    assert 0 < len(params.sections) < TEXTURE.shape[0]
    changed = [z for z in range(TEXTURE.shape[0]) if not np.array_equal(out[z], TEXTURE[z])]
    assert changed == list(params.sections)
    for z in changed:
        assert gradient_energy(out[z]) < 0.3 * gradient_energy(TEXTURE[z])
        assert out[z].mean() == pytest.approx(TEXTURE[z].mean(), abs=1e-5)
    assert out.dtype == np.float32
    assert_labels_kept(batch, TEXTURE)


def test_3d_blur_of_an_impulse_spreads_alike_in_world_units_on_an_anisotropic_grid():
    # 16 nm at (8, 4, 4) nm is 2 voxels along z and 4 along y and x
    node = BlurAugment(RAW, sigma_min=16.0, sigma_max=16.0, per_section=False)
    data = impulse((21, 41, 41))
    (batch,) = run(node, [0], data, (8, 4, 4))
    out = batch[RAW].data
    assert out.sum() == pytest.approx(1.0, rel=1e-4)
    for axis, voxel in enumerate((8, 4, 4)):
        assert spatial_variance(out, axis) * voxel**2 == pytest.approx(16.0**2, rel=0.03)


def test_motion_blur_spreads_an_impulse_along_a_line_in_its_section_only():
    node = BlurAugment(RAW, mode="motion", length_min=48.0, length_max=48.0, per_section=False)
    data = impulse((5, 33, 33))
    (batch,) = run(node, [3], data, (40, 4, 4))
    out = batch[RAW].data
    assert out.sum() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_array_equal(np.delete(out, 2, axis=0), 0.0)
    # the blurred impulse's mass is a line 12 voxels long in the drawn direction
    (dy, dx) = node._params.lines[0]
    assert np.hypot(dy, dx) == pytest.approx(12.0)
    ys, xs = np.nonzero(out[2])
    weights = out[2][ys, xs]
    coords = np.stack([ys - 16, xs - 16]).astype(np.float64)
    covariance = (coords * weights) @ coords.T / weights.sum()
    values, vectors = np.linalg.eigh(covariance)
    assert values[1] == pytest.approx(12.0**2 / 12, rel=0.15)  # a uniform line's variance
    assert values[0] < 0.3
    assert abs(vectors[:, 1] @ np.array([dy, dx]) / 12.0) == pytest.approx(1.0, abs=1e-3)


def test_per_section_motion_blur_draws_a_direction_for_each_section():
    node = BlurAugment(RAW, mode="motion", length_min=8.0, length_max=16.0, section_probability=1)
    params = drawn(node, 0, TEXTURE, (1, 1, 1))
    assert params.sections == tuple(range(TEXTURE.shape[0]))
    angles = {round(float(np.arctan2(dy, dx)), 6) for dy, dx in params.lines}
    assert len(angles) == TEXTURE.shape[0]
    (batch,) = run(node, [0], TEXTURE)
    for z in range(TEXTURE.shape[0]):
        assert gradient_energy(batch[RAW].data[z]) < gradient_energy(TEXTURE[z])


@pytest.mark.parametrize("shape", [(0.0, 0.0), (3.0, 4.0), (-2.5, 7.0), (0.0, 9.0)])
def test_line_kernel_is_centred_and_sums_to_one(shape):
    kernel = line_kernel(*shape)
    assert kernel.sum() == pytest.approx(1.0)
    assert all(n % 2 == 1 for n in kernel.shape)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-12)  # point-symmetric


def test_blur_on_another_axis_blurs_planes_orthogonal_to_it():
    node = BlurAugment(RAW, sigma_min=2.0, sigma_max=2.0, axis=2, section_probability=1.0)
    data = impulse((21, 21, 9))
    (batch,) = run(node, [0], data)
    out = batch[RAW].data
    np.testing.assert_array_equal(np.delete(out, 4, axis=2), 0.0)
    assert spatial_variance(out, 0) == pytest.approx(4.0, rel=0.03)
    assert spatial_variance(out, 1) == pytest.approx(4.0, rel=0.03)


def test_channels_are_blurred_alike():
    node = BlurAugment(RAW, sigma_min=2.0, sigma_max=3.0, section_probability=0.5)
    data = np.stack([TEXTURE, TEXTURE])
    (batch,) = run(node, [2], data)
    out = batch[RAW].data
    assert out.shape == data.shape and not np.array_equal(out, data)
    np.testing.assert_array_equal(out[0], out[1])


@pytest.mark.parametrize("mode", ["gaussian", "motion"])
def test_same_seed_replays_different_seeds_differ_and_p_zero_does_nothing(mode):
    sizes = (
        {"sigma_min": 2.0, "sigma_max": 4.0}
        if mode == "gaussian"
        else {"length_min": 4.0, "length_max": 12.0}
    )
    node = BlurAugment(RAW, mode=mode, section_probability=0.5, **sizes)
    first, again, other = run(node, [7, 7, 8], TEXTURE)
    np.testing.assert_array_equal(first[RAW].data, again[RAW].data)
    assert not np.array_equal(first[RAW].data, other[RAW].data)
    for batch in run(BlurAugment(RAW, mode=mode, p=0.0, **sizes), range(5), TEXTURE):
        np.testing.assert_array_equal(batch[RAW].data, TEXTURE)


def test_input_array_is_not_modified():
    data = TEXTURE.copy()
    node = BlurAugment(RAW, sigma_min=2.0, sigma_max=2.0, section_probability=1.0)
    node.apply_transform(data, drawn(node, 0, data, (1, 1, 1)))
    np.testing.assert_array_equal(data, TEXTURE)
