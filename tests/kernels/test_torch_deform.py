"""deform_on_device: torch resamples raw on the training device as the numba kernel does."""

import math

import gunpowder as gp
import numpy as np
import pytest
import torch
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array

from voltrain.kernels.resample import source_box
from voltrain.kernels.torch_deform import deform_raw, device_box_shape
from voltrain.nodes.elastic_augment import ElasticAugment
from voltrain.nodes.fused_augment import FusedAugment
from voltrain.nodes.intensity_augment import IntensityAugment
from voltrain.nodes.mirror_transpose_augment import MirrorTransposeAugment
from voltrain.nodes.noise_augment import NoiseAugment

RAW, GT = gp.ArrayKey("RAW"), gp.ArrayKey("GT")
SOURCE, MAP = gp.ArrayKey("RAW_SOURCE"), gp.ArrayKey("RAW_MAP")
VOXEL = Coordinate(8, 8, 8)
ELASTIC = dict(control_point_spacing=(80, 80, 80), jitter_sigma=(16, 16, 16))


def _node(on_device, noise_mode="gaussian"):
    keys = dict(raw_source_key=SOURCE, raw_map_key=MAP) if on_device else {}
    return FusedAugment(
        ElasticAugment(RAW, [GT], **ELASTIC),
        MirrorTransposeAugment([RAW, GT]),
        IntensityAugment(RAW, 0.9, 1.1, -0.1, 0.1),
        NoiseAugment(RAW, mode=noise_mode, var=0.01, amount=0.1),
        normalize=True,
        **keys,
    )


def _samples(node, seeds, on_device):
    rng = np.random.default_rng(0)
    shape = (72, 72, 72)
    volumes = {
        RAW: rng.integers(0, 256, shape, dtype=np.uint8),
        GT: rng.integers(0, 9, shape).astype(np.uint64),
    }
    sources = tuple(
        gp.ArraySource(key, Array(data, offset=(0, 0, 0), voxel_size=VOXEL)) + gp.Pad(key, None)
        for key, data in volumes.items()
    )
    pipeline = sources + gp.MergeProvider() + node
    centre = Coordinate(288, 288, 288)
    batches = []
    with gp.build(pipeline):
        for seed in seeds:
            request = gp.BatchRequest(random_seed=seed)
            request[RAW] = gp.ArraySpec(roi=Roi(centre - VOXEL * 12, VOXEL * 24))
            request[GT] = gp.ArraySpec(roi=Roi(centre - VOXEL * 6, VOXEL * 12))
            if on_device:
                request[SOURCE] = gp.ArraySpec(nonspatial=True)
                request[MAP] = gp.ArraySpec(nonspatial=True)
            batches.append(pipeline.request_batch(request))
    return batches


@pytest.mark.parametrize("noise_mode", ["gaussian", "s&p"])
def test_device_raw_equals_the_loader_raw_for_a_batch(noise_mode):
    seeds = [3, 4]
    on_cpu = _samples(_node(False, noise_mode), seeds, on_device=False)
    handed_over = _samples(_node(True, noise_mode), seeds, on_device=True)
    source = torch.from_numpy(np.stack([b[SOURCE].data for b in handed_over]))
    raw_map = torch.from_numpy(np.stack([b[MAP].data for b in handed_over]))
    raw = deform_raw(source, raw_map)
    assert raw.shape == (2, 1, 24, 24, 24) and raw.dtype == torch.float32
    for sample, cpu, device in zip(raw, on_cpu, handed_over, strict=True):
        np.testing.assert_array_equal(device[GT].data, cpu[GT].data)
        close = np.isclose(sample[0].numpy(), cpu[RAW].data, atol=1e-3)
        # salt and pepper may flip a voxel whose draw sits on the threshold; nothing else
        assert close.mean() > 0.999


def test_the_fixed_source_box_holds_every_draw():
    node = ElasticAugment(RAW, [], **ELASTIC)
    request = gp.BatchRequest()
    roi = Roi((0, 0, 0), VOXEL * Coordinate(30, 24, 20))
    request[RAW] = gp.ArraySpec(roi=roi)
    vs = np.array(VOXEL, dtype=float)
    box = device_box_shape(np.array([30, 24, 20]), vs, None, True, node.jitter_sigma)
    assert max(box) <= math.ceil(np.linalg.norm([30, 24, 20])) + 2 * 16
    for seed in range(50):
        transform = node.make_params(np.random.default_rng(seed), request).transform
        begin, end = source_box(transform, np.zeros(3), vs, (30, 24, 20), vs)
        assert np.all((end - begin) / vs <= box)
