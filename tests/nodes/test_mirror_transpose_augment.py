"""MirrorTransposeAugment: raw, gt and mask move identically, requests fit, seeds replay."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array
from gunpowder.pipeline import PipelineSetupError

from voltrain.errors import ConfigError
from voltrain.nodes.mirror_transpose_augment import MirrorTransposeAugment

RAW = gp.ArrayKey("RAW")
GT = gp.ArrayKey("GT")
MASK = gp.ArrayKey("MASK")

# every source voxel holds its own index, so an output voxel says where it came from
SOURCE_SHAPE = (12, 14, 16)
SOURCE_OFFSET = Coordinate(40, 80, 120)
ISOTROPIC = Coordinate(4, 4, 4)


def voxel_ids(shape: tuple[int, ...]) -> np.ndarray:
    return np.arange(np.prod(shape)).reshape(shape)


# what the default request sees without augmentation
UNAUGMENTED_RAW = voxel_ids(SOURCE_SHAPE)[1:11, 2:12, 3:13]
UNAUGMENTED_GT = voxel_ids(SOURCE_SHAPE)[4:8, 4:10, 5:11]


def source_pipeline(voxel_size: Coordinate) -> gp.Pipeline:
    """raw/gt/mask over the same world region: raw = gt = voxel id, mask = id % 2."""
    ids = voxel_ids(SOURCE_SHAPE)
    arrays = {
        RAW: ids.astype(np.float32),
        GT: ids.astype(np.uint64),
        MASK: (ids % 2).astype(np.uint8),
    }
    offset = SOURCE_OFFSET * voxel_size
    sources = tuple(
        gp.ArraySource(key, Array(data, offset=offset, voxel_size=voxel_size))
        for key, data in arrays.items()
    )
    return sources + gp.MergeProvider()


def make_request(
    seed: int,
    voxel_size: Coordinate,
    raw_voxels=(10, 10, 10),
    gt_voxels=(4, 6, 6),
    gt_shift=(0, 0, 0),
):
    """Raw larger than gt and mask, centred inside the source; gt moved by ``gt_shift`` voxels."""
    centre = (SOURCE_OFFSET + Coordinate(SOURCE_SHAPE) / 2) * voxel_size
    request = gp.BatchRequest(random_seed=seed)
    for key, voxels in ((RAW, raw_voxels), (GT, gt_voxels), (MASK, gt_voxels)):
        shape = Coordinate(voxels) * voxel_size
        shift = Coordinate(gt_shift) * voxel_size if key != RAW else Coordinate(0, 0, 0)
        request[key] = gp.ArraySpec(roi=Roi(centre - shape / 2 + shift, shape))
    return request


def run(node: MirrorTransposeAugment, seeds, voxel_size=ISOTROPIC, **sizes):
    pipeline = source_pipeline(voxel_size) + node
    with gp.build(pipeline):
        return [pipeline.request_batch(make_request(s, voxel_size, **sizes)) for s in seeds]


def source_coords(ids: np.ndarray) -> np.ndarray:
    """The source voxel coordinates (axis first) of each voxel of an id array."""
    return np.stack(np.unravel_index(ids.astype(np.int64), SOURCE_SHAPE))


def assert_rigid(ids: np.ndarray) -> None:
    """``ids`` is a mirrored/transposed copy of a contiguous source block."""
    coords = source_coords(ids)
    used_axes = set()
    for source_axis in range(3):
        steps = [np.unique(np.diff(coords[source_axis], axis=d)) for d in range(3)]
        moving = [d for d, s in enumerate(steps) if not np.array_equal(s, [0])]
        assert len(moving) == 1, f"source axis {source_axis} spread over {moving}"
        assert set(steps[moving[0]].tolist()) <= {-1, 1} and len(steps[moving[0]]) == 1
        used_axes.add(moving[0])
    assert used_axes == {0, 1, 2}


def test_raw_gt_and_mask_stay_aligned_under_every_draw():
    node = MirrorTransposeAugment([RAW, GT, MASK])
    batches = run(node, range(40))
    changed = 0
    for batch in batches:
        raw, gt, mask = batch[RAW], batch[GT], batch[MASK]
        assert raw.spec.roi == make_request(0, ISOTROPIC)[RAW].roi
        raw_on_gt = raw.crop(gt.spec.roi).data
        np.testing.assert_array_equal(raw_on_gt, gt.data.astype(np.float32))
        np.testing.assert_array_equal(mask.data, gt.data % 2)
        assert_rigid(raw.data)
        # about the centre: the sample shows the same voxels, rearranged
        np.testing.assert_array_equal(np.sort(raw.data, axis=None), UNAUGMENTED_RAW.ravel())
        changed += not np.array_equal(raw.data, UNAUGMENTED_RAW)
    assert changed >= 30, "with p=1 nearly every draw moves voxels"


def test_gt_off_centre_in_raw_stays_aligned():
    node = MirrorTransposeAugment([RAW, GT, MASK])
    moved = 0
    for batch in run(node, range(30), gt_voxels=(4, 4, 4), gt_shift=(1, -2, 2)):
        gt_on_raw = batch[RAW].crop(batch[GT].spec.roi).data
        np.testing.assert_array_equal(gt_on_raw, batch[GT].data.astype(np.float32))
        np.testing.assert_array_equal(batch[MASK].data, batch[GT].data % 2)
        moved += not np.array_equal(batch[GT].data, voxel_ids(SOURCE_SHAPE)[5:9, 3:7, 6:10])
    assert moved >= 20


def test_transposes_unequal_extents_by_transposing_the_request():
    node = MirrorTransposeAugment([RAW, GT, MASK], mirror_probability=0.0)
    batches = run(node, range(30), raw_voxels=(6, 8, 12), gt_voxels=(2, 4, 8))
    transposed = 0
    for batch in batches:
        assert batch[RAW].data.shape == (6, 8, 12)
        assert batch[GT].data.shape == (2, 4, 8)
        assert_rigid(batch[RAW].data)
        np.testing.assert_array_equal(
            batch[RAW].crop(batch[GT].spec.roi).data, batch[GT].data.astype(np.float32)
        )
        coords = source_coords(batch[RAW].data)
        transposed += bool(np.any(np.diff(coords[0], axis=0) == 0))
    assert transposed > 0, "some draws transpose z away from axis 0"


def test_anisotropic_data_is_only_transposed_in_plane():
    voxel_size = Coordinate(40, 4, 4)
    node = MirrorTransposeAugment([RAW, GT, MASK], transpose_axes=[1, 2])
    for batch in run(node, range(30), voxel_size=voxel_size):
        coords = source_coords(batch[RAW].data)
        # each output z-section comes from one source z-section
        assert np.all(np.diff(coords[0], axis=1) == 0)
        assert np.all(np.diff(coords[0], axis=2) == 0)
        np.testing.assert_array_equal(
            batch[RAW].crop(batch[GT].spec.roi).data, batch[GT].data.astype(np.float32)
        )


def test_transposing_axes_of_different_voxel_size_is_rejected():
    node = MirrorTransposeAugment([RAW, GT, MASK], transpose_axes=None)
    # gunpowder wraps errors raised in setup(); the ConfigError is the cause
    with pytest.raises(PipelineSetupError) as info:
        run(node, [0], voxel_size=Coordinate(40, 4, 4))
    assert isinstance(info.value.__cause__, ConfigError)
    assert "transpose_axes" in str(info.value.__cause__)


def test_axes_beyond_the_spatial_dims_are_rejected():
    with pytest.raises(PipelineSetupError) as info:
        run(MirrorTransposeAugment([RAW, GT, MASK], mirror_axes=[3]), [0])
    assert isinstance(info.value.__cause__, ConfigError)
    assert "mirror_axes" in str(info.value.__cause__)


@pytest.mark.parametrize("kwargs", [{"mirror_axes": [-1]}, {"transpose_axes": [1, 1]}])
def test_negative_or_repeated_axes_are_rejected(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        MirrorTransposeAugment([RAW, GT, MASK], **kwargs)


def test_coarser_gt_stays_on_its_voxel_grid_and_aligned():
    # raw at 4 nm, gt and mask at 8 nm: mirroring must keep gt ROIs on the 8 nm grid
    ids = voxel_ids(SOURCE_SHAPE)
    fine = np.kron(ids, np.ones((2, 2, 2), dtype=ids.dtype))
    offset = SOURCE_OFFSET * 8
    sources = (
        gp.ArraySource(RAW, Array(fine.astype(np.float32), offset=offset, voxel_size=(4,) * 3)),
        gp.ArraySource(GT, Array(ids.astype(np.uint64), offset=offset, voxel_size=(8,) * 3)),
    )
    pipeline = sources + gp.MergeProvider() + MirrorTransposeAugment([RAW, GT, MASK])
    centre = (SOURCE_OFFSET + Coordinate(SOURCE_SHAPE) / 2) * 8
    with gp.build(pipeline):
        for seed in range(20):
            request = gp.BatchRequest(random_seed=seed)
            request[RAW] = gp.ArraySpec(roi=Roi(centre - 40, (80, 80, 80)))
            request[GT] = gp.ArraySpec(roi=Roi(centre - 16, (32, 32, 32)))
            batch = pipeline.request_batch(request)
            gt = batch[GT].data.astype(np.float32)
            np.testing.assert_array_equal(
                batch[RAW].crop(batch[GT].spec.roi).data, np.kron(gt, np.ones((2, 2, 2)))
            )


def test_same_seed_replays_and_different_seeds_differ():
    node = MirrorTransposeAugment([RAW, GT, MASK])
    first, again = run(node, [7, 7])
    np.testing.assert_array_equal(first[RAW].data, again[RAW].data)
    np.testing.assert_array_equal(first[GT].data, again[GT].data)
    outputs = {batch[RAW].data.tobytes() for batch in run(node, range(8))}
    assert len(outputs) > 1


def test_p_zero_leaves_the_batch_unchanged():
    node = MirrorTransposeAugment([RAW, GT, MASK], p=0.0)
    for batch in run(node, range(10)):
        np.testing.assert_array_equal(batch[RAW].data, UNAUGMENTED_RAW)
        np.testing.assert_array_equal(batch[GT].data, UNAUGMENTED_GT)


def test_applied_fraction_is_about_p():
    # always mirror z when applied, so "changed" means "applied"
    node = MirrorTransposeAugment(
        [RAW, GT, MASK], mirror_axes=[0], transpose_axes=[], mirror_probability=1.0, p=0.3
    )
    unaugmented = UNAUGMENTED_RAW
    batches = run(node, range(200))
    applied = np.mean([not np.array_equal(b[RAW].data, unaugmented) for b in batches])
    assert 0.2 < applied < 0.4


def test_params_respect_axes_and_probabilities():
    node = MirrorTransposeAugment(
        [RAW], mirror_axes=[1, 2], transpose_axes=[1, 2], mirror_probability=0.25
    )
    draws = [node.make_params(np.random.default_rng(seed), 3) for seed in range(400)]
    mirrors = np.array([d.mirror for d in draws])
    assert not mirrors[:, 0].any()
    assert np.all(np.abs(mirrors[:, 1:].mean(axis=0) - 0.25) < 0.07)
    transposes = {d.transpose for d in draws}
    assert transposes == {(0, 1, 2), (0, 2, 1)}
    assert all(d.apply for d in draws)
