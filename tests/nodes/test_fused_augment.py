"""FusedAugment: one pass does what elastic, mirror/transpose, intensity and noise do apart."""

import math

import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array
from scipy import stats

from voltrain.kernels.resample import VoxelOps, resample
from voltrain.nodes.elastic_augment import ElasticAugment
from voltrain.nodes.fused_augment import FusedAugment, mirrored_transform
from voltrain.nodes.intensity_augment import IntensityAugment, IntensityParams
from voltrain.nodes.mirror_transpose_augment import (
    MirrorTransposeAugment,
    MirrorTransposeParams,
    twice_centre,
    upstream_roi,
)
from voltrain.nodes.noise_augment import NoiseAugment, NoiseParams

RAW, GT, MASK = gp.ArrayKey("RAW"), gp.ArrayKey("GT"), gp.ArrayKey("MASK")
VOXEL = Coordinate(8, 8, 8)
ELASTIC = dict(control_point_spacing=(80, 80, 80), jitter_sigma=(16, 16, 16))


def _block_labels(index):
    """Label id as a function of voxel index: blocks of 4 voxels, huge ids."""
    block = index // 4
    return (block[0] * 10_000 + block[1] * 100 + block[2] + 2**40).astype(np.uint64)


def _fused(mirror=True, intensity=None, noise=None, normalize=False, p=1.0, keys=(GT, MASK)):
    elastic = ElasticAugment(RAW, list(keys), **ELASTIC, p=p)
    mirror = MirrorTransposeAugment([RAW, *keys], p=p) if mirror else None
    return FusedAugment(elastic, mirror, intensity, noise, normalize=normalize)


def _batch(node, volumes, rois, seed):
    sources = tuple(
        gp.ArraySource(key, Array(data, offset=(0, 0, 0), voxel_size=VOXEL)) + gp.Pad(key, None)
        for key, data in volumes.items()
    )
    pipeline = sources + gp.MergeProvider() + node
    request = gp.BatchRequest(random_seed=seed)
    for key, roi in rois.items():
        request[key] = gp.ArraySpec(roi=roi)
    with gp.build(pipeline):
        return pipeline.request_batch(request)


def _centred(shape, centre=(320, 320, 320)):
    size = Coordinate(shape) * VOXEL
    return Roi(Coordinate(centre) - size / 2, size)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_raw_and_labels_stay_aligned_through_deformation_mirror_and_transpose(seed):
    # raw holds each voxel's world position (3 channels), labels are a function of position:
    # after the fused pass, the label at every output voxel must be the label of the
    # position its raw value says it was read from
    shape = (80, 80, 80)
    index = np.indices(shape)
    positions = ((index + 0.5) * 8).astype(np.float32)
    batch = _batch(
        _fused(keys=(GT,)),
        {RAW: positions, GT: _block_labels(index)},
        {RAW: _centred((24, 24, 24)), GT: _centred((24, 24, 24))},
        seed,
    )
    decoded = batch[RAW].data / 8.0
    expected = _block_labels(np.floor(decoded).astype(np.int64))
    fraction = decoded - np.floor(decoded)
    clear = np.all(np.abs(fraction - 0.5) < 0.45, axis=0)
    identity = (np.indices((24,) * 3) + 0.5) * 8 + np.reshape(
        batch[RAW].spec.roi.begin, (3, 1, 1, 1)
    )
    assert np.abs(batch[RAW].data - identity).mean() > 16, "the sample was barely moved"
    assert clear.mean() > 0.7
    assert (batch[GT].data[clear] == expected[clear]).mean() > 0.99


def test_label_ids_and_mask_values_are_never_blended():
    rng = np.random.default_rng(0)
    shape = (60, 60, 60)
    ids = np.array([0, 7, 2**40 + 5, 2**62 + 1], dtype=np.uint64)
    labels = ids[_block_labels(np.indices(shape)) % 4]
    volumes = {
        RAW: rng.integers(0, 256, shape, dtype=np.uint8),
        GT: labels,
        MASK: rng.integers(0, 2, shape, dtype=np.uint8),
    }
    rois = {RAW: _centred((30,) * 3, (240,) * 3), GT: _centred((14,) * 3, (240,) * 3)}
    rois[MASK] = rois[GT]
    batch = _batch(_fused(normalize=True), volumes, rois, 5)
    assert batch[GT].data.dtype == np.uint64 and batch[MASK].data.dtype == np.uint8
    assert set(np.unique(batch[GT].data)) <= set(ids.tolist())
    assert set(np.unique(batch[MASK].data)) <= {0, 1}
    assert batch[RAW].data.dtype == np.float32 and 0.0 <= batch[RAW].data.min()


def test_one_pass_equals_the_separate_augments_for_the_same_parameters():
    # raw as stored (uint8) -> normalise -> elastic -> mirror/transpose -> intensity -> noise
    rng = np.random.default_rng(3)
    source = rng.integers(0, 256, (60, 60, 60), dtype=np.uint8)
    roi = Roi((96, 64, 80), Coordinate(22, 18, 18) * VOXEL)  # not a cube: transposing moves extents
    mirror_params = MirrorTransposeParams(True, (True, False, True), (2, 0, 1))
    elastic_roi = upstream_roi(roi, mirror_params, twice_centre([roi], VOXEL), VOXEL)
    elastic = ElasticAugment(RAW, [], **ELASTIC)
    request = gp.BatchRequest()
    request[RAW] = gp.ArraySpec(roi=elastic_roi)
    transform = elastic.make_params(rng, request).transform
    intensity = IntensityAugment(RAW, 0.9, 1.1, -0.1, 0.1)
    noise = NoiseAugment(RAW, var=0.01)
    intensity_params, noise_params = IntensityParams(True, 1.07, -0.04), NoiseParams(True, 99)

    def resampled(data, out_roi, world_map, ops=None):
        out_shape = tuple(out_roi.shape / VOXEL)
        return resample(
            data, np.zeros(3), np.array(VOXEL), np.array(out_roi.begin), np.array(VOXEL),
            out_shape, world_map, True, ops,
        )  # fmt: skip

    apart = resampled(source.astype(np.float32) * np.float32(1 / 255), elastic_roi, transform)
    apart = MirrorTransposeAugment([RAW]).apply_transform(apart, mirror_params)
    apart = intensity.apply_transform(apart, intensity_params)
    apart = noise.apply_transform(apart, noise_params)
    ops = VoxelOps(
        factor=1 / 255, scale=1.07, shift=-0.04, clip_intensity=True,
        noise_mode="gaussian", noise_seed=99, noise_var=0.01, clip_noise=True,
    )  # fmt: skip
    fused = resampled(
        source, roi, mirrored_transform(transform, mirror_params, roi, elastic_roi), ops
    )
    assert fused.shape == apart.shape == (22, 18, 18)
    np.testing.assert_allclose(fused, apart, atol=2e-6)


def _draws(node, seeds):
    volumes = {RAW: np.zeros((8, 8, 8), np.uint8), GT: np.zeros((8, 8, 8), np.uint64)}
    sources = tuple(
        gp.ArraySource(key, Array(data, offset=(0, 0, 0), voxel_size=VOXEL))
        for key, data in volumes.items()
    )
    pipeline = sources + gp.MergeProvider() + node
    draws = []
    with gp.build(pipeline):
        for seed in seeds:
            request = gp.BatchRequest(random_seed=seed)
            request[RAW] = gp.ArraySpec(roi=_centred((20,) * 3))
            request[GT] = gp.ArraySpec(roi=_centred((10,) * 3))
            draws.append(node.make_params(request)[0])
    return draws


def test_parameters_follow_their_configured_ranges_and_are_independent():
    intensity = IntensityAugment(RAW, 0.8, 1.2, -0.1, 0.1, p=0.5)
    node = _fused(keys=(GT,), intensity=intensity, noise=NoiseAugment(RAW, var=0.01))
    draws = _draws(node, range(600))
    scales = np.array([d.intensity.scale for d in draws])
    shifts = np.array([d.intensity.shift for d in draws])
    assert stats.kstest(scales, stats.uniform(0.8, 0.4).cdf).pvalue > 0.001
    assert stats.kstest(shifts, stats.uniform(-0.1, 0.2).cdf).pvalue > 0.001
    assert 0.42 < np.mean([d.intensity.apply for d in draws]) < 0.58
    flips = np.array([d.mirror.mirror for d in draws], dtype=float)
    assert np.all(np.abs(flips.mean(axis=0) - 0.5) < 0.08)
    permutations = {d.mirror.transpose for d in draws}
    assert len(permutations) == 6
    # a uniformly random rotation has E[trace] = 0 (trace = 1 + 2 cos(angle))
    traces = np.array([np.trace(d.elastic.transform.rotation) for d in draws])
    assert abs(traces.mean()) < 0.15
    # one request seed feeds every component: their draws must not be tied together
    for other in (flips[:, 0], traces, [d.intensity.apply for d in draws]):
        assert abs(np.corrcoef(scales, other)[0, 1]) < 0.15
    assert len({d.noise.noise_seed for d in draws}) == len(draws)


def test_skipped_augments_leave_the_normalised_crop():
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (40, 40, 40), dtype=np.uint8)
    labels = _block_labels(np.indices((40, 40, 40)))
    intensity = IntensityAugment(RAW, 0.5, 0.6, 0.2, 0.3, p=0.0)
    node = _fused(
        keys=(GT,), intensity=intensity, noise=NoiseAugment(RAW, p=0.0), normalize=True, p=0.0
    )
    rois = {RAW: _centred((16,) * 3, (160,) * 3), GT: _centred((8,) * 3, (160,) * 3)}
    batch = _batch(node, {RAW: raw, GT: labels}, rois, 3)
    expected = raw[(rois[RAW] / VOXEL).to_slices()].astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_allclose(batch[RAW].data, expected, atol=1e-6)
    np.testing.assert_array_equal(batch[GT].data, labels[(rois[GT] / VOXEL).to_slices()])


def test_same_seed_same_sample_and_different_seeds_differ():
    rng = np.random.default_rng(2)
    volumes = {
        RAW: rng.integers(0, 256, (48,) * 3, dtype=np.uint8),
        GT: _block_labels(np.indices((48,) * 3)),
    }
    rois = {RAW: _centred((20,) * 3, (192,) * 3), GT: _centred((10,) * 3, (192,) * 3)}
    node = _fused(keys=(GT,), noise=NoiseAugment(RAW, var=0.01), normalize=True)
    first, again, other = (_batch(node, volumes, rois, seed) for seed in (4, 4, 5))
    for key in (RAW, GT):
        np.testing.assert_array_equal(first[key].data, again[key].data)
    assert not np.array_equal(first[RAW].data, other[RAW].data)


def test_rotation_angle_of_full_rotations_has_the_uniform_density():
    # uniform rotations: angle density (1 - cos a) / pi on [0, pi]
    draws = _draws(_fused(mirror=False, keys=(GT,)), range(400))
    angles = np.array([d.elastic.rotation_angle for d in draws])
    cdf = lambda a: (np.radians(a) - np.sin(np.radians(a))) / math.pi  # noqa: E731
    assert stats.kstest(angles, cdf).pvalue > 0.001
