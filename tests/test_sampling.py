"""The sampling map: valid centres for min_masked, and a quick error when none exist."""

from __future__ import annotations

import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi

from voltrain.data import DatasetConfig, open_volume
from voltrain.errors import SamplingError
from voltrain.sampling import compute_sampling_map


def _volume(container, mask=True):
    config = DatasetConfig(
        name="cells",
        raw=str(container / "raw"),
        gt=str(container / "labels"),
        mask=str(container / "mask") if mask else None,
    )
    return open_volume(config, "data.train[0]", Coordinate(20, 20, 20))


def _exact_fraction(volume, center: Coordinate, output_size: Coordinate) -> float:
    roi = Roi(center - output_size / 2, output_size)
    mask = np.zeros(roi.shape / volume.voxel_size, dtype=np.float64)
    inside = roi.intersect(volume.mask.roi)
    dst = tuple(
        slice(b, e)
        for b, e in zip((inside.begin - roi.begin) / 8, (inside.end - roi.begin) / 8, strict=True)
    )
    mask[dst] = volume.mask[inside] > 0
    return float(mask.mean())


def test_drawn_centres_are_mostly_well_masked(volume):
    opened = _volume(volume)
    output_size = Coordinate(20, 20, 20) * 8
    sampling_map = compute_sampling_map(opened, output_size, min_masked=0.5)
    rng = np.random.default_rng(0)
    fractions = [
        _exact_fraction(opened, sampling_map.draw_center(rng, opened.voxel_size), output_size)
        for _ in range(50)
    ]
    # The map is an estimate on 2-voxel blocks: nearly every drawn centre is good, and the
    # reject node catches the rest.
    assert np.mean(np.array(fractions) >= 0.5) > 0.8
    assert min(fractions) > 0.3


def test_unreachable_min_masked_fails_fast_naming_the_dataset(sparse_volume):
    opened = _volume(sparse_volume)
    with pytest.raises(SamplingError) as error:
        compute_sampling_map(opened, Coordinate(20, 20, 20) * 8, min_masked=0.99)
    message = str(error.value)
    assert "dataset 'cells'" in message
    assert "covers 1" in message or "covers 9" in message  # ~10% coverage, named
    assert "best fraction" in message


def test_map_memory_is_a_small_fraction_of_the_mask(volume):
    # At a realistic output size (40^3 voxels: 5^3-voxel blocks) the map keeps one int32 per
    # valid box, a few percent of the uint8 mask.
    opened = _volume(volume)
    sampling_map = compute_sampling_map(opened, Coordinate(40, 40, 40) * 8, min_masked=0.1)
    assert len(sampling_map.valid_boxes) > 0
    assert sampling_map.valid_boxes.nbytes < opened.mask.data.nbytes / 10


def test_no_mask_means_the_gt_roi(volume):
    # Without a mask every gt voxel is trusted and padding is not: fully masked boxes are
    # exactly those inside the gt ROI, up to the one-block granularity of the map.
    opened = _volume(volume, mask=False)
    sampling_map = compute_sampling_map(opened, Coordinate(20, 20, 20) * 8, min_masked=1.0)
    assert sampling_map.best_fraction == 1.0 and sampling_map.coverage == 1.0
    rng = np.random.default_rng(1)
    allowed = opened.gt.roi.grow(sampling_map.block_size, sampling_map.block_size)
    for _ in range(20):
        center = sampling_map.draw_center(rng, opened.voxel_size)
        roi = Roi(center - Coordinate(80, 80, 80), Coordinate(160, 160, 160))
        assert allowed.contains(roi)
