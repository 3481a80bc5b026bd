"""Fragments of one block: the seeded watershed (default) and the mutex watershed."""

import numpy as np
import pytest

from tests.segment.segment_volumes import NEIGHBORHOOD, affinities_of
from voltrain.segment import SegmentConfig, segment_array
from voltrain.segment.fragments import block_fragments


def touching_cubes(shape=(16, 16, 32)) -> np.ndarray:
    labels = np.ones(shape, dtype=np.uint64)
    labels[..., shape[2] // 2 :] = 2
    return labels


def cubes_with_membrane(shape=(16, 16, 34)) -> np.ndarray:
    """Two cubes either side of a membrane two voxels thick (label 0), as in EM."""
    labels = touching_cubes(shape)
    middle = shape[2] // 2
    labels[..., middle - 1 : middle + 1] = 0
    return labels


def noisy(affinities: np.ndarray, seed: int, sigma: float = 0.15) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(affinities + rng.normal(0, sigma, affinities.shape), 0, 1).astype(np.float32)


def leaky_membrane(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Noisy affinities whose membrane has holes: one (z, y) column in ten has high
    affinities right through it, as a trained model's weak spots on a membrane do."""
    affinities = noisy(affinities_of(labels), seed)
    rng = np.random.default_rng(seed + 1)
    middle = labels.shape[2] // 2
    holes = rng.random(labels.shape[:2]) < 0.1
    through = affinities[:, :, :, middle - 1 : middle + 2]
    through[:, holes] = rng.uniform(0.8, 1.0, through[:, holes].shape)
    return affinities


def test_touching_cubes_with_a_leaky_noisy_boundary_stay_in_separate_fragments():
    labels = cubes_with_membrane()
    affinities = leaky_membrane(labels)
    fragments = block_fragments(affinities, NEIGHBORHOOD, SegmentConfig())
    assert (fragments[labels != 0] > 0).all()  # every voxel of a cube is in a fragment
    # The membrane's voxels go to either side and a fragment may spill a voxel through a
    # hole, but none covers a substantial part of both cubes.
    for fragment in np.unique(fragments):
        covered = np.bincount(labels[fragments == fragment].astype(np.int64), minlength=3)
        assert min(covered[1], covered[2]) < 0.01 * (labels == 1).sum()


def test_the_segmentation_keeps_cubes_apart_across_a_leaky_membrane():
    labels = cubes_with_membrane()
    affinities = leaky_membrane(labels)
    seeded = segment_array(affinities, NEIGHBORHOOD, [0.5])[0.5]
    majority = [majority_segment(seeded, labels, label) for label in (1, 2)]
    assert majority[0] != majority[1]
    assert (seeded[labels == 1] == majority[0]).mean() > 0.9
    assert (seeded[labels == 2] == majority[1]).mean() > 0.9


def majority_segment(segmentation: np.ndarray, labels: np.ndarray, label: int) -> int:
    return int(np.bincount(segmentation[labels == label].astype(np.int64)).argmax())


def test_one_object_with_high_interior_affinities_is_few_fragments():
    labels = np.ones((16, 24, 24), dtype=np.uint64)
    affinities = noisy(affinities_of(labels), seed=3, sigma=0.1)
    fragments = block_fragments(affinities, NEIGHBORHOOD, SegmentConfig())
    assert fragments.min() > 0
    assert len(np.unique(fragments)) <= 3


def test_anisotropic_voxels_place_seeds_by_world_distance():
    # A slab 6 sections thick at 40 nm and 64 voxels wide at 4 nm: in voxels the sections
    # are the short side, in nanometres they are the long one.
    labels = np.ones((6, 64, 64), dtype=np.uint64)
    affinities = noisy(affinities_of(labels), seed=4, sigma=0.05)
    config = SegmentConfig(seed_radius=8)
    fragments = block_fragments(affinities, NEIGHBORHOOD, config, voxel_size=(40, 4, 4))
    assert len(np.unique(fragments)) <= 4
    assert fragments.min() > 0


def test_fragments_per_section_never_cross_sections():
    labels = np.ones((4, 16, 16), dtype=np.uint64)
    affinities = noisy(affinities_of(labels), seed=5, sigma=0.05)
    config = SegmentConfig(fragments_per_section=True)
    fragments = block_fragments(affinities, NEIGHBORHOOD, config, voxel_size=(40, 4, 4))
    per_section = [set(np.unique(section).tolist()) for section in fragments]
    for z in range(1, len(per_section)):
        assert not per_section[z] & per_section[z - 1]
    assert all(len(ids) <= 2 for ids in per_section)


@pytest.mark.parametrize("method", ["watershed", "mutex"])
def test_ids_are_offset_per_block_and_the_mask_is_background(method):
    labels = touching_cubes((8, 8, 16))
    affinities = noisy(affinities_of(labels), seed=6, sigma=0.05)
    mask = np.ones(labels.shape, dtype=np.uint8)
    mask[:2] = 0
    fragments = block_fragments(
        affinities, NEIGHBORHOOD, SegmentConfig(fragments=method), mask, id_offset=1000
    )
    assert (fragments[:2] == 0).all()
    assert (fragments[2:] > 1000).all()
    ids = np.unique(fragments[2:]) - 1000
    assert ids.tolist() == list(range(1, len(ids) + 1))


def test_voxels_without_any_strong_edge_are_background_as_with_the_mutex_watershed():
    labels = touching_cubes((8, 8, 16))
    labels[:, :, :3] = 0
    affinities = affinities_of(labels)
    for method in ("watershed", "mutex"):
        fragments = block_fragments(affinities, NEIGHBORHOOD, SegmentConfig(fragments=method))
        assert (fragments[labels == 0] == 0).all()
        assert (fragments[labels != 0] != 0).all()
