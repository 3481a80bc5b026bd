"""ElasticAugment moves raw, labels and mask by one map, in a real gunpowder pipeline."""

import math

import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array
from scipy import stats

from voltrain.errors import ConfigError
from voltrain.nodes.elastic_augment import ElasticAugment

RAW, GT, MASK = gp.ArrayKey("RAW"), gp.ArrayKey("GT"), gp.ArrayKey("MASK")
ELASTIC = dict(control_point_spacing=(80, 80, 80), jitter_sigma=(16, 16, 16))


def _source(key, data, offset, voxel_size):
    array = Array(data, offset=offset, voxel_size=voxel_size)
    return gp.ArraySource(key, array) + gp.Pad(key, None)


def _request_batch(sources, node, rois, seed=0):
    """Run one request through ``sources -> node`` and return the batch."""
    pipeline = tuple(sources) + gp.MergeProvider() + node
    request = gp.BatchRequest(random_seed=seed)
    for key, roi in rois.items():
        request[key] = gp.ArraySpec(roi=roi)
    with gp.build(pipeline):
        return pipeline.request_batch(request)


def _centred(centre, shape, voxel_size):
    """A voxel-aligned ROI of ``shape`` voxels around a world point."""
    size = Coordinate(shape) * Coordinate(voxel_size)
    return Roi(Coordinate(centre) - size / 2, size)


def _block_labels(index):
    """Label id as a function of voxel index: blocks of 4 voxels, never blended."""
    block = index // 4
    return (block[0] * 10_000 + block[1] * 100 + block[2] + 1).astype(np.uint64)


def _position_volume(shape, offset, voxel_size):
    """Raw with 3 channels holding each voxel centre's world (z, y, x) position."""
    index = np.indices(shape)
    voxel = np.reshape(voxel_size, (3, 1, 1, 1))
    centres = np.reshape(offset, (3, 1, 1, 1)) + (index + 0.5) * voxel
    return centres.astype(np.float32), _block_labels(index)


def _alignment(raw_voxel, gt_voxel, node, raw_shape, gt_shape, volume_shape, seed):
    """Deform a position-encoding raw and block labels; return decoded positions and gt.

    Trilinear interpolation of a linear function is exact, so the deformed raw holds the
    source position every raw voxel read from.
    """
    offset = Coordinate(-8, 4, 2) * Coordinate(raw_voxel)
    positions, _ = _position_volume(volume_shape, offset, raw_voxel)
    gt_volume_shape = Coordinate(volume_shape) * Coordinate(raw_voxel) / Coordinate(gt_voxel)
    labels = _block_labels(np.indices(gt_volume_shape))
    centre = offset + Coordinate(volume_shape) * Coordinate(raw_voxel) / 2
    batch = _request_batch(
        [_source(RAW, positions, offset, raw_voxel), _source(GT, labels, offset, gt_voxel)],
        node,
        # gt off-centre inside raw: the two must still share one rotation centre
        {
            RAW: _centred(centre, raw_shape, raw_voxel),
            GT: _centred(centre + Coordinate(1, -3, 2) * Coordinate(gt_voxel), gt_shape, gt_voxel),
        },
        seed,
    )
    return batch, offset


def _expected_labels(decoded, offset, gt_voxel):
    """The block label at decoded world positions, and which are clear of voxel faces."""
    index = (decoded - np.reshape(offset, (3, 1, 1, 1))) / np.reshape(gt_voxel, (3, 1, 1, 1))
    fraction = index - np.floor(index)
    clear = np.all(np.abs(fraction - 0.5) < 0.48, axis=0)
    return _block_labels(np.floor(index).astype(np.int64)), clear


def _gt_region_of_raw(batch, gt_voxel):
    """Raw positions averaged over the raw voxels that make up each gt voxel."""
    raw, gt = batch[RAW], batch[GT]
    start = (gt.spec.roi.begin - raw.spec.roi.begin) / raw.spec.voxel_size
    factor = Coordinate(gt_voxel) / raw.spec.voxel_size
    stop = start + Coordinate(gt.data.shape) * factor
    region = raw.data[(slice(None),) + tuple(slice(a, b) for a, b in zip(start, stop, strict=True))]
    shape = [3]
    for n, f in zip(gt.data.shape, factor, strict=True):
        shape += [n, f]
    return region.reshape(shape).mean(axis=(2, 4, 6))


def test_raw_and_labels_are_moved_by_the_same_map():
    node = ElasticAugment(RAW, [GT], **ELASTIC)
    batch, offset = _alignment((8, 8, 8), (8, 8, 8), node, (28,) * 3, (12,) * 3, (80,) * 3, 4)
    decoded = _gt_region_of_raw(batch, (8, 8, 8))
    expected, clear = _expected_labels(decoded, offset, (8, 8, 8))
    identity = np.indices((12,) * 3) * 8.0 + np.reshape(batch[GT].spec.roi.begin, (3, 1, 1, 1))
    assert np.abs(decoded - identity - 4).mean() > 16, "the sample was barely moved"
    assert clear.mean() > 0.8
    assert (batch[GT].data[clear] == expected[clear]).mean() > 0.99


def test_anisotropic_voxels_and_coarser_labels_stay_aligned():
    raw_voxel, gt_voxel = (40, 4, 4), (40, 8, 8)
    node = ElasticAugment(
        RAW, [GT], (400, 80, 80), (20, 16, 16), rotation_axes=[1, 2], max_rotation=180
    )
    batch, offset = _alignment(raw_voxel, gt_voxel, node, (8, 40, 40), (4, 12, 12), (20, 72, 72), 1)
    decoded = _gt_region_of_raw(batch, gt_voxel)
    expected, clear = _expected_labels(decoded, offset, gt_voxel)
    assert batch[GT].data.shape == (4, 12, 12)
    assert clear.mean() > 0.7
    assert (batch[GT].data[clear] == expected[clear]).mean() > 0.98


def _labelled_sources(shape=(40, 40, 40), voxel_size=(8, 8, 8), seed=0):
    rng = np.random.default_rng(seed)
    raw = rng.random(shape, dtype=np.float32)
    ids = np.array([0, 3, 2**40 + 5, 2**62 + 1], dtype=np.uint64)
    labels = ids[_block_labels(np.indices(shape)) % 4]
    mask = rng.integers(0, 2, size=shape, dtype=np.uint8)
    sources = [
        _source(RAW, raw, (0, 0, 0), voxel_size),
        _source(GT, labels, (0, 0, 0), voxel_size),
        _source(MASK, mask, (0, 0, 0), voxel_size),
    ]
    return sources, raw, labels, mask


def _rois(raw_shape=(24,) * 3, gt_shape=(12,) * 3, voxel_size=(8, 8, 8), centre=(160,) * 3):
    gt_roi = _centred(centre, gt_shape, voxel_size)
    return {RAW: _centred(centre, raw_shape, voxel_size), GT: gt_roi, MASK: gt_roi}


def test_labels_and_mask_are_never_blended():
    sources, _, labels, _ = _labelled_sources()
    node = ElasticAugment(RAW, [GT, MASK], **ELASTIC)
    batch = _request_batch(sources, node, _rois(), seed=7)
    assert batch[GT].data.dtype == np.uint64 and batch[MASK].data.dtype == np.uint8
    assert set(np.unique(batch[GT].data)) <= set(np.unique(labels))
    assert set(np.unique(batch[MASK].data)) <= {0, 1}
    assert batch[RAW].data.dtype == np.float32


def test_no_jitter_and_no_rotation_returns_the_input_crop_exactly():
    sources, raw, labels, mask = _labelled_sources()
    with pytest.warns(UserWarning, match="unchanged"):
        node = ElasticAugment(RAW, [GT, MASK], (80, 80, 80), (0, 0, 0), rotate=False)
    rois = _rois(centre=(168, 160, 152))
    batch = _request_batch(sources, node, rois, seed=3)
    for key, volume in [(RAW, raw), (GT, labels), (MASK, mask)]:
        crop = volume[(rois[key] / Coordinate(8, 8, 8)).to_slices()]
        np.testing.assert_array_equal(batch[key].data, crop)
        assert batch[key].spec.roi == rois[key]


@pytest.mark.parametrize("rotation_axes, stays_layered", [([1, 2], True), (None, False)])
def test_rotation_within_yx_keeps_z_layers_intact(rotation_axes, stays_layered):
    # big enough that rotated and jittered requests never read the zero padding
    shape = (56, 56, 56)
    layers = np.broadcast_to((np.arange(56) // 2 + 1)[:, None, None], shape).astype(np.uint64)
    sources = [
        _source(RAW, layers.astype(np.float32), (0, 0, 0), (8, 8, 8)),
        _source(GT, layers.copy(), (0, 0, 0), (8, 8, 8)),
    ]
    node = ElasticAugment(RAW, [GT], (80, 80, 80), (0, 16, 16), rotation_axes=rotation_axes)
    rois = _rois(centre=(224, 224, 224))
    del rois[MASK]
    batch = _request_batch(sources, node, rois, seed=5)
    one_label_per_slice = all(len(np.unique(z_slice)) == 1 for z_slice in batch[GT].data)
    flat_raw_slices = all(np.ptp(z_slice) < 1e-4 for z_slice in batch[RAW].data)
    assert one_label_per_slice == stays_layered
    assert flat_raw_slices == stays_layered


def test_same_seed_repeats_and_different_seeds_differ():
    sources, *_ = _labelled_sources()
    node = ElasticAugment(RAW, [GT, MASK], **ELASTIC)
    first, again, other = (_request_batch(sources, node, _rois(), seed=s) for s in (11, 11, 12))
    for key in (RAW, GT, MASK):
        np.testing.assert_array_equal(first[key].data, again[key].data)
    assert not np.array_equal(first[RAW].data, other[RAW].data)
    assert not np.array_equal(first[GT].data, other[GT].data)


def test_skipped_samples_pass_through_untouched():
    sources, raw, labels, _ = _labelled_sources()
    node = ElasticAugment(RAW, [GT, MASK], **ELASTIC, p=0.0)
    rois = _rois()
    batch = _request_batch(sources, node, rois, seed=1)
    np.testing.assert_array_equal(batch[RAW].data, raw[(rois[RAW] / 8).to_slices()])
    np.testing.assert_array_equal(batch[GT].data, labels[(rois[GT] / 8).to_slices()])


def _request_for_params():
    request = gp.BatchRequest()
    request[RAW] = gp.ArraySpec(roi=Roi((0, 0, 0), (400, 320, 240)))
    return request


def test_planar_rotation_angles_are_uniform_within_max_rotation():
    node = ElasticAugment(RAW, [], **ELASTIC, rotation_axes=[1, 2], max_rotation=30)
    request = _request_for_params()
    params = [node.make_params(np.random.default_rng(seed), request) for seed in range(1000)]
    angles = np.array([p.rotation_angle for p in params])
    assert np.all(np.abs(angles) <= 30)
    assert stats.kstest(angles, stats.uniform(-30, 60).cdf).pvalue > 1e-3
    for p in params[:20]:
        rotation = p.transform.rotation
        np.testing.assert_allclose(rotation[0], [1, 0, 0])
        assert math.degrees(math.atan2(rotation[2, 1], rotation[1, 1])) == pytest.approx(
            p.rotation_angle
        )


def test_full_rotations_are_uniformly_random():
    node = ElasticAugment(RAW, [], **ELASTIC)
    request = _request_for_params()
    params = [node.make_params(np.random.default_rng(seed), request) for seed in range(2000)]
    rotations = np.array([p.transform.rotation for p in params])
    np.testing.assert_allclose(
        rotations @ rotations.transpose(0, 2, 1),
        np.broadcast_to(np.eye(3), rotations.shape),
        atol=1e-9,
    )
    # a uniform rotation's matrix averages to zero and its angle has density (1 - cos)/pi
    assert np.abs(rotations.mean(axis=0)).max() < 0.05
    angles = np.radians([p.rotation_angle for p in params])
    np.testing.assert_allclose(np.trace(rotations, axis1=1, axis2=2), 1 + 2 * np.cos(angles))
    cdf = lambda a: (a - np.sin(a)) / np.pi  # noqa: E731
    assert stats.kstest(angles, cdf).pvalue > 1e-3


def test_limited_3d_rotations_stay_within_max_rotation():
    node = ElasticAugment(RAW, [], **ELASTIC, max_rotation=20)
    request = _request_for_params()
    rotations = [
        node.make_params(np.random.default_rng(seed), request).transform.rotation
        for seed in range(300)
    ]
    cos = np.clip((np.trace(rotations, axis1=1, axis2=2) - 1) / 2, -1, 1)
    angles = np.degrees(np.arccos(cos))
    assert angles.max() <= 20 + 1e-6
    assert angles.max() > 18


def test_control_point_jitter_has_the_configured_sigma_and_p_is_respected():
    node = ElasticAugment(RAW, [], (80, 80, 80), (10, 20, 30), p=0.7)
    request = _request_for_params()
    params = [node.make_params(np.random.default_rng(seed), request) for seed in range(400)]
    applied = [p for p in params if p.transform is not None]
    assert len(applied) / len(params) == pytest.approx(0.7, abs=0.07)
    jitter = np.concatenate([p.transform.displacements.reshape(-1, 3) for p in applied])
    np.testing.assert_allclose(jitter.std(axis=0), [10, 20, 30], rtol=0.03)
    np.testing.assert_allclose(jitter.mean(axis=0), 0, atol=0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(control_point_spacing=(80, 0, 80), jitter_sigma=(1, 1, 1)),
        dict(control_point_spacing=(80, 80), jitter_sigma=(1, 1)),
        dict(control_point_spacing=(80, 80, 80), jitter_sigma=(1, -1, 1)),
        dict(**ELASTIC, rotation_axes=[2]),
        dict(**ELASTIC, rotation_axes=[1, 3]),
        dict(**ELASTIC, max_rotation=270),
    ],
)
def test_invalid_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        ElasticAugment(RAW, [GT], **kwargs)
