"""MisalignAugment: slipped and shifted sections move raw, labels and mask together."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array

from voltrain.nodes.misalign_augment import MisalignAugment

RAW = gp.ArrayKey("RAW")
GT = gp.ArrayKey("GT")
MASK = gp.ArrayKey("MASK")
VOXEL_SIZE = Coordinate(40, 4, 4)
SHAPE = (8, 20, 20)  # the source, in voxels
# the middle 12 x 12 of every section: shifts up to 4 voxels read real data
INNER = Roi((0, 16, 16), (320, 48, 48))
WHOLE = Roi((0, 0, 0), Coordinate(SHAPE) * VOXEL_SIZE)


def world_code(shape, voxel_size) -> np.ndarray:
    """Each voxel's world position (z, y, x of its first corner) as one number."""
    z, y, x = (np.indices(shape) * np.array(voxel_size)[:, None, None, None]).astype(np.int64)
    return z * 1_000_000 + y * 1000 + x


def run(node, roi: Roi, seeds, gt_voxel_size=VOXEL_SIZE) -> list[tuple[gp.Batch, object]]:
    """Batches of raw, gt (coordinate codes) and an all-ones mask over ``roi``."""
    gt_shape = Coordinate(SHAPE) * VOXEL_SIZE / gt_voxel_size
    arrays = {
        RAW: Array(world_code(SHAPE, VOXEL_SIZE).astype(np.float64), (0, 0, 0), VOXEL_SIZE),
        GT: Array(world_code(gt_shape, gt_voxel_size).astype(np.uint64), (0, 0, 0), gt_voxel_size),
        MASK: Array(np.ones(gt_shape, dtype=np.uint8), (0, 0, 0), gt_voxel_size),
    }
    pipeline = tuple(gp.ArraySource(k, a) for k, a in arrays.items()) + gp.MergeProvider() + node
    results = []
    with gp.build(pipeline):
        for seed in seeds:
            request = gp.BatchRequest(random_seed=seed)
            for key in arrays:
                request[key] = gp.ArraySpec(roi=roi)
            results.append((pipeline.request_batch(request), node._params))
    return results


def expected(roi: Roi, voxel_size: Coordinate, params, mask=False) -> np.ndarray:
    """What the node should give: the source's codes, the moved sections read at
    ``x - shift``, and 0 (and mask 0) where that lies outside the source."""
    shape = roi.shape / voxel_size
    begin = np.array(roi.begin)[:, None, None, None]
    world = np.indices(shape) * np.array(voxel_size)[:, None, None, None] + begin
    z_end = np.inf if params.end is None else params.end
    moved = (world[0] >= params.first) & (world[0] < z_end)
    read = world - np.where(moved, 1, 0)[None] * np.array(params.shift)[:, None, None, None]
    inside = np.all([(read[a] >= 0) & (read[a] < WHOLE.end[a]) for a in range(3)], axis=0)
    code = read[0] * 1_000_000 + read[1] * 1000 + read[2]
    return np.where(inside, 1 if mask else code, 0)


def check(batch: gp.Batch, roi: Roi, params, gt_voxel_size=VOXEL_SIZE) -> None:
    np.testing.assert_array_equal(batch[RAW].data, expected(roi, VOXEL_SIZE, params))
    np.testing.assert_array_equal(batch[GT].data, expected(roi, gt_voxel_size, params))
    mask = expected(roi, gt_voxel_size, params, mask=True)
    np.testing.assert_array_equal(batch[MASK].data, mask)
    for key in (RAW, GT, MASK):
        assert batch[key].spec.roi == roi


def test_slip_moves_exactly_one_section_of_raw_gt_and_mask_by_the_drawn_shift():
    node = MisalignAugment([RAW, GT, MASK], mode="slip", max_displacement=16)
    results = run(node, INNER, range(6))
    assert all(any(params.shift) for _, params in results)
    for batch, params in results:
        assert params.end - params.first == VOXEL_SIZE[0]
        check(batch, INNER, params)
        # the shifted-in content is real data: every voxel of the moved section is masked in
        assert batch[MASK].data.all()
        section = (params.first - INNER.begin[0]) // VOXEL_SIZE[0]
        source = world_code(SHAPE, VOXEL_SIZE)[:, 4:16, 4:16]
        changed = np.any(batch[RAW].data != source, axis=(1, 2))
        assert set(np.flatnonzero(changed)) <= {section}
        assert changed.any() == any(params.shift)


def test_shift_moves_every_section_from_the_drawn_one_on():
    node = MisalignAugment([RAW, GT, MASK], mode="shift", max_displacement=16)
    results = run(node, INNER, range(6))
    assert all(any(params.shift) for _, params in results)
    for batch, params in results:
        assert params.end is None and params.first > INNER.begin[0]
        check(batch, INNER, params)
        source = world_code(SHAPE, VOXEL_SIZE)[:, 4:16, 4:16]
        changed = np.any(batch[RAW].data != source, axis=(1, 2))
        first = (params.first - INNER.begin[0]) // VOXEL_SIZE[0]
        if any(params.shift):
            np.testing.assert_array_equal(changed, np.arange(SHAPE[0]) >= first)


def test_mask_is_zero_exactly_where_the_moved_content_lies_beyond_the_source():
    node = MisalignAugment([RAW, GT, MASK], mode="shift", max_displacement=16)
    seen_masked = False
    for batch, params in run(node, WHOLE, range(6)):
        check(batch, WHOLE, params)
        seen_masked |= not batch[MASK].data.all()
    assert seen_masked


def test_arrays_of_different_voxel_sizes_move_by_the_same_world_distance():
    node = MisalignAugment([RAW, GT, MASK], mode="slip", max_displacement=16)
    gt_voxel_size = Coordinate(40, 8, 8)
    for batch, params in run(node, INNER, range(6), gt_voxel_size):
        assert all(s % 8 == 0 for s in params.shift)
        check(batch, INNER, params, gt_voxel_size)


def test_same_seed_replays_and_different_seeds_differ():
    node = MisalignAugment([RAW, GT, MASK], mode="slip", max_displacement=16)
    (first, _), (again, _), (other, _) = run(node, INNER, [3, 3, 4])
    for key in (RAW, GT, MASK):
        np.testing.assert_array_equal(first[key].data, again[key].data)
    assert not np.array_equal(first[RAW].data, other[RAW].data)


@pytest.mark.parametrize("mode", ["slip", "shift"])
def test_p_zero_leaves_the_batch_unchanged(mode):
    node = MisalignAugment([RAW, GT, MASK], mode=mode, max_displacement=16, p=0.0)
    for batch, params in run(node, INNER, range(4)):
        assert not params.apply
        np.testing.assert_array_equal(batch[RAW].data, world_code(SHAPE, VOXEL_SIZE)[:, 4:16, 4:16])
        assert batch[MASK].data.all()
