"""CutoutAugment: holes in sections or 3D, filled with zero, mean or noise; labels kept."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.section_pipeline import RAW, assert_labels_kept, run
from voltrain.nodes.cutout_augment import CutoutAugment, Hole, hole_mask
from voltrain.nodes.raw_section_augment import section_index

# no voxel is 0 or the mean exactly, so filled voxels can be told apart
TEXTURE = np.random.default_rng(0).uniform(0.2, 0.8, (12, 32, 32)).astype(np.float32)


def expected_boxes(holes: tuple[Hole, ...], shape, axis: int = 0) -> np.ndarray:
    """The voxels the holes' boxes cover, from their start and size alone."""
    covered = np.zeros(shape, dtype=bool)
    for hole in holes:
        where = (Ellipsis,) if hole.section is None else section_index(axis, hole.section)
        box = tuple(slice(s, s + n) for s, n in zip(hole.start, hole.size, strict=True))
        covered[where][box] = True
    return covered


def test_section_boxes_zero_exactly_the_drawn_regions_and_keep_labels():
    node = CutoutAugment(RAW, size_min=16.0, size_max=40.0, section_probability=0.5)
    (batch,) = run(node, [3], TEXTURE, (40, 4, 4))
    out, holes = batch[RAW].data, node._params.holes
    assert holes and all(h.section is not None for h in holes)
    covered = expected_boxes(holes, TEXTURE.shape)
    np.testing.assert_array_equal(out == 0.0, covered)
    np.testing.assert_array_equal(out[~covered], TEXTURE[~covered])
    for hole in holes:  # 16 to 40 nm is 4 to 10 voxels in y and x
        assert all(4 <= n <= 10 for n in hole.size)
    assert_labels_kept(batch, TEXTURE)


def test_3d_boxes_span_sections_with_sizes_in_world_units():
    node = CutoutAugment(
        RAW, size_min=[80.0, 8.0, 8.0], size_max=[160.0, 16.0, 16.0], per_section=False
    )
    (batch,) = run(node, [1], TEXTURE, (40, 4, 4))
    holes = node._params.holes
    assert 1 <= len(holes) <= 3 and all(h.section is None for h in holes)
    for hole in holes:
        assert 2 <= hole.size[0] <= 4 and all(2 <= n <= 4 for n in hole.size[1:])
    covered = expected_boxes(holes, TEXTURE.shape)
    np.testing.assert_array_equal(batch[RAW].data == 0.0, covered)


def test_mean_fill_uses_each_sections_mean():
    data = TEXTURE + np.linspace(-0.1, 0.1, 12, dtype=np.float32)[:, None, None]
    node = CutoutAugment(RAW, size_min=20.0, size_max=20.0, fill="mean", section_probability=1)
    (batch,) = run(node, [0], data)
    out = batch[RAW].data
    covered = expected_boxes(node._params.holes, data.shape)
    for z in range(12):
        np.testing.assert_allclose(out[z][covered[z]], data[z].mean(), rtol=1e-6)
    np.testing.assert_array_equal(out[~covered], data[~covered])


def test_noise_fill_has_the_statistics_of_the_sample_but_no_structure():
    node = CutoutAugment(RAW, size_min=24.0, size_max=24.0, fill="noise", per_section=False)
    (batch,) = run(node, [2], TEXTURE)
    out = batch[RAW].data
    covered = expected_boxes(node._params.holes, TEXTURE.shape)
    filled = out[covered]
    assert not np.array_equal(filled, TEXTURE[covered])
    assert filled.mean() == pytest.approx(TEXTURE.mean(), abs=0.01)
    assert filled.std() == pytest.approx(TEXTURE.std(), rel=0.1)
    assert filled.min() >= TEXTURE.min() and filled.max() <= TEXTURE.max()


def test_blobs_lie_inside_their_boxes_and_are_not_boxes():
    node = CutoutAugment(RAW, size_min=24.0, size_max=32.0, shape="blob", section_probability=1)
    (batch,) = run(node, [0], TEXTURE)
    holes = node._params.holes
    zeroed = batch[RAW].data == 0.0
    assert not np.any(zeroed & ~expected_boxes(holes, TEXTURE.shape))
    for hole in holes:
        inside = hole_mask(hole, "blob")
        assert 0.25 < inside.mean() < 0.9  # an irregular blob, neither a dot nor the box
    expected = np.zeros_like(zeroed)
    for hole in holes:
        box = tuple(slice(s, s + n) for s, n in zip(hole.start, hole.size, strict=True))
        expected[hole.section][box] |= hole_mask(hole, "blob")
    np.testing.assert_array_equal(zeroed, expected)


def test_cutout_same_seed_replays_different_seeds_differ_and_p_zero_does_nothing():
    node = CutoutAugment(RAW, size_min=8.0, size_max=16.0, shape="blob", fill="noise")
    first, again, other = run(node, [5, 5, 6], TEXTURE)
    np.testing.assert_array_equal(first[RAW].data, again[RAW].data)
    assert not np.array_equal(first[RAW].data, other[RAW].data)
    for batch in run(CutoutAugment(RAW, 8.0, 16.0, p=0.0), range(5), TEXTURE):
        np.testing.assert_array_equal(batch[RAW].data, TEXTURE)


def test_channels_get_the_same_holes():
    data = np.stack([TEXTURE, 1 - TEXTURE])
    node = CutoutAugment(RAW, size_min=8.0, size_max=16.0, section_probability=0.5)
    (batch,) = run(node, [0], data)
    zeroed = batch[RAW].data == 0.0
    assert zeroed.any()
    np.testing.assert_array_equal(zeroed[0], zeroed[1])
