"""The numba resampling kernels agree with a plain numpy evaluation of the transform."""

import math

import numpy as np
import pytest

from voltrain.kernels.resample import (
    WorldTransform,
    axis_angle_rotation,
    catmull_rom_taps,
    plane_rotation,
    resample,
    source_box,
)

VOXEL = np.array([8.0, 8.0, 8.0])


def _transform(seed: int, out_offset, out_shape, voxel=VOXEL, sigma=16.0, spacing=80.0):
    """A random rotation + jitter covering an output box, as the node builds it."""
    rng = np.random.default_rng(seed)
    begin = np.asarray(out_offset, dtype=float)
    extent = np.asarray(out_shape) * voxel
    spacing = np.full(3, spacing)
    grid_shape = tuple(int(n) for n in np.ceil(extent / spacing) + 3)
    return WorldTransform(
        centre=begin + extent / 2,
        rotation=axis_angle_rotation(rng.normal(size=3), rng.uniform(-math.pi, math.pi)),
        grid_origin=begin - spacing,
        grid_spacing=spacing,
        displacements=rng.normal(size=(*grid_shape, 3)) * sigma,
    )


def _voxel_centres(offset, shape, voxel=VOXEL):
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return np.asarray(offset) + (index.reshape(-1, 3) + 0.5) * voxel


def test_catmull_rom_passes_through_control_points_and_reproduces_lines():
    first, weights = catmull_rom_taps(np.array([3.0, 5.0]))
    np.testing.assert_array_equal(first, [2, 4])
    np.testing.assert_array_equal(weights, [[0, 1, 0, 0], [0, 1, 0, 0]])

    coords = np.linspace(2.0, 7.0, 101)
    first, weights = catmull_rom_taps(coords)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    # interpolating the control points' own positions must give the position back
    positions = (first[:, None] + np.arange(4)) * weights
    np.testing.assert_allclose(positions.sum(axis=1), coords)


def test_rotation_helpers_build_proper_rotations():
    rotation = plane_rotation(1, 2, math.radians(30))
    np.testing.assert_allclose(rotation[0], [1, 0, 0])
    assert np.trace(rotation) == pytest.approx(1 + 2 * math.cos(math.radians(30)))
    rotation = axis_angle_rotation(np.array([1.0, 2.0, 3.0]), 2.0)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    np.testing.assert_allclose(rotation @ [1.0, 2.0, 3.0], [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "seed, source_voxel, out_voxel",
    [(0, VOXEL, VOXEL), (1, VOXEL, VOXEL), (2, (40, 4, 4), (40, 4, 4)), (3, VOXEL, (16, 4, 8))],
)
def test_nearest_reads_the_source_voxel_under_each_mapped_centre(seed, source_voxel, out_voxel):
    source_voxel, out_voxel = np.array(source_voxel, float), np.array(out_voxel, float)
    out_offset, out_shape = out_voxel * [4, 60, 10], (10, 12, 14)
    transform = _transform(seed, out_offset, out_shape, voxel=out_voxel)
    mapped = transform.map_points(_voxel_centres(out_offset, out_shape, out_voxel))
    source_offset = (np.floor(mapped.min(axis=0) / source_voxel) - 2) * source_voxel
    source_shape = tuple(
        np.ceil((mapped.max(axis=0) - source_offset) / source_voxel).astype(int) + 2
    )
    # ids above 2**53 catch any detour through float64
    source = (2**60 + np.arange(np.prod(source_shape), dtype=np.uint64)).reshape(source_shape)
    out = resample(
        source, source_offset, source_voxel, out_offset, out_voxel, out_shape, transform, False
    )

    index = (mapped - source_offset) / source_voxel
    expected = source[tuple(np.floor(index).astype(int).T)]
    # a centre landing exactly on a voxel face may round either way
    decisive = np.all(np.abs(index - np.floor(index) - 0.5) < 0.499, axis=1)
    assert out.dtype == np.uint64
    assert decisive.mean() > 0.95
    np.testing.assert_array_equal(out.reshape(-1)[decisive], expected[decisive])


def test_linear_interpolation_is_exact_on_a_linear_intensity_ramp():
    out_offset, out_shape = np.array([0.0, 0.0, 0.0]), (9, 11, 13)
    transform = _transform(2, out_offset, out_shape)
    source_offset = out_offset - 12 * VOXEL
    slope = np.array([0.01, -0.02, 0.03])
    centres = _voxel_centres(source_offset, (40, 40, 40))
    source = (centres @ slope).reshape(40, 40, 40).astype(np.float32)
    out = resample(source, source_offset, VOXEL, out_offset, VOXEL, out_shape, transform, True)

    expected = transform.map_points(_voxel_centres(out_offset, out_shape)) @ slope
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.reshape(-1), expected, atol=1e-4)


@pytest.mark.parametrize("linear", [True, False])
def test_samples_outside_the_source_read_zero(linear):
    out_offset, out_shape = np.array([0.0, 0.0, 0.0]), (4, 4, 4)
    transform = _transform(3, out_offset, out_shape, sigma=0.0)
    source = np.full((6, 6, 6), 7, dtype=np.float32 if linear else np.uint8)
    far_away = np.array([10_000.0, 0.0, 0.0])
    out = resample(source, far_away, VOXEL, out_offset, VOXEL, out_shape, transform, linear)
    assert not out.any()


@pytest.mark.parametrize("seed, sigma", [(0, 16.0), (1, 16.0), (2, 40.0), (3, 40.0)])
@pytest.mark.parametrize("linear", [True, False])
def test_source_box_holds_every_voxel_the_resampling_reads(seed, sigma, linear):
    out_offset, out_shape = np.array([80.0, 0.0, 40.0]), (20, 16, 24)
    transform = _transform(seed, out_offset, out_shape, sigma=sigma)
    big_offset = out_offset - 40 * VOXEL
    big = np.random.default_rng(seed).random((100, 100, 100), dtype=np.float32) + 1
    if not linear:
        big = (big * 1000).astype(np.uint64)
    begin, end = source_box(transform, out_offset, VOXEL, out_shape, VOXEL)
    assert np.all(begin % VOXEL == 0) and np.all(end % VOXEL == 0)
    crop = tuple(
        slice(int(b), int(e))
        for b, e in zip((begin - big_offset) / VOXEL, (end - big_offset) / VOXEL, strict=True)
    )
    assert all(s.start >= 0 and s.stop <= 100 for s in crop)

    from_big = resample(big, big_offset, VOXEL, out_offset, VOXEL, out_shape, transform, linear)
    from_box = resample(big[crop], begin, VOXEL, out_offset, VOXEL, out_shape, transform, linear)
    np.testing.assert_array_equal(from_box, from_big)
    # tight: the mapped voxel centres reach within two voxels of every face of the box
    mapped = transform.map_points(_voxel_centres(out_offset, out_shape))
    assert np.all(mapped.min(axis=0) - begin < 2.5 * VOXEL)
    assert np.all(end - mapped.max(axis=0) < 3.5 * VOXEL)


@pytest.mark.parametrize(
    "axes, signs", [((0, 1, 2), (-1, 1, 1)), ((2, 0, 1), (1, -1, -1)), ((1, 0, 2), (1, 1, 1))]
)
def test_precomposing_a_mirror_and_transposition_is_exact(axes, signs):
    transform = _transform(4, (0.0, 8.0, 16.0), (20, 16, 12))
    translation = np.array([40.0, 200.0, -24.0])
    composed = transform.precomposed(axes, signs, translation)
    # points inside the grid of ``transform``, and where the mirrored axes take them from
    moved = np.random.default_rng(0).uniform([8, 16, 24], [150, 128, 100], size=(200, 3))
    points = np.empty_like(moved)
    for d, (a, sign) in enumerate(zip(axes, signs, strict=True)):
        points[:, d] = sign * (moved[:, a] - translation[a])
    np.testing.assert_allclose(composed.map_points(points), transform.map_points(moved), atol=1e-9)
