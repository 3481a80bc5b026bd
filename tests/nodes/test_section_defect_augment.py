"""SectionDefectAugment: missing, low-contrast and artifact sections of raw, seeded."""

from __future__ import annotations

import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate
from funlib.persistence import Array

from voltrain.errors import DataError, unwrap_voltrain_errors
from voltrain.nodes.section_defect_augment import (
    ARTIFACT,
    INTACT,
    LOW_CONTRAST,
    MISSING,
    SectionDefectAugment,
)
from voltrain.synthetic import write_datasets

RAW = gp.ArrayKey("RAW")
GT = gp.ArrayKey("GT")
MASK = gp.ArrayKey("MASK")
SHAPE = (16, 12, 10)
VOXEL_SIZE = Coordinate(40, 4, 4)
_rng = np.random.default_rng(0)
SOURCES = {
    RAW: _rng.uniform(0.2, 0.8, SHAPE).astype(np.float32),
    GT: _rng.integers(0, 5, SHAPE).astype(np.uint64),
    MASK: _rng.integers(0, 2, SHAPE).astype(np.uint8),
}


def run(node: SectionDefectAugment, seeds) -> list[tuple[gp.Batch, object]]:
    """Each seed's batch with the parameters the node drew for it."""
    sources = tuple(
        gp.ArraySource(key, Array(data, offset=(0, 0, 0), voxel_size=VOXEL_SIZE))
        for key, data in SOURCES.items()
    )
    pipeline = sources + gp.MergeProvider() + node
    results = []
    with gp.build(pipeline):
        for seed in seeds:
            request = gp.BatchRequest(random_seed=seed)
            for key in SOURCES:
                request.add(key, Coordinate(SHAPE) * VOXEL_SIZE)
            results.append((pipeline.request_batch(request), node._params))
    return results


def test_missing_sections_are_zero_and_the_others_untouched():
    ((batch, params),) = run(SectionDefectAugment(RAW, prob_missing=0.5, prob_low_contrast=0), [1])
    raw = batch[RAW].data
    missing = params.kinds == MISSING
    assert 0 < missing.sum() < SHAPE[0]
    np.testing.assert_array_equal(raw[missing], 0.0)
    np.testing.assert_array_equal(raw[~missing], SOURCES[RAW][~missing])
    np.testing.assert_array_equal(batch[GT].data, SOURCES[GT])
    np.testing.assert_array_equal(batch[MASK].data, SOURCES[MASK])


def test_mean_fill_holds_each_missing_sections_own_mean():
    node = SectionDefectAugment(RAW, prob_missing=0.5, prob_low_contrast=0, fill="mean")
    ((batch, params),) = run(node, [2])
    for z in np.flatnonzero(params.kinds == MISSING):
        np.testing.assert_allclose(batch[RAW].data[z], SOURCES[RAW][z].mean(), rtol=1e-6)


def test_low_contrast_sections_keep_their_mean_with_a_smaller_spread():
    node = SectionDefectAugment(
        RAW, prob_missing=0, prob_low_contrast=0.5, contrast_min=0.2, contrast_max=0.4
    )
    ((batch, params),) = run(node, [3])
    raw, source = batch[RAW].data, SOURCES[RAW]
    low = np.flatnonzero(params.kinds == LOW_CONTRAST)
    assert 0 < len(low) < SHAPE[0]
    for z in low:
        assert raw[z].mean() == pytest.approx(source[z].mean(), abs=1e-5)
        ratio = raw[z].std() / source[z].std()
        assert 0.2 <= ratio <= 0.4
        assert ratio == pytest.approx(params.contrast[z], rel=1e-4)
    intact = params.kinds == INTACT
    np.testing.assert_array_equal(raw[intact], source[intact])


@pytest.fixture
def artifacts(tmp_path):
    """An artifact volume whose voxels encode their position, and a half-opaque alpha."""
    shape = (5, 20, 16)
    z, y, x = np.indices(shape)
    values = (z * 40 + y * 2 + x % 2).astype(np.uint8)  # unique per (z, y, x parity)
    alpha = np.zeros(shape, dtype=np.float32)
    alpha[:, :, ::2] = 1.0
    alpha[:, :, 1::2] = 0.5
    container = tmp_path / "artifacts.zarr"
    write_datasets(
        container,
        {"raw": values, "alpha": alpha},
        VOXEL_SIZE,
        Coordinate(0, 0, 0),
        Coordinate(5, 20, 16),
        3,
    )
    return container, values, alpha


def test_artifacts_appear_only_in_their_sections_with_the_artifacts_pixels(artifacts):
    container, values, alpha = artifacts
    node = SectionDefectAugment(
        RAW,
        prob_missing=0,
        prob_low_contrast=0,
        prob_artifact=0.5,
        artifact_raw=str(container / "raw"),
        artifact_alpha=str(container / "alpha"),
    )
    ((batch, params),) = run(node, [4])
    raw, source = batch[RAW].data, SOURCES[RAW]
    chosen = np.flatnonzero(params.kinds == ARTIFACT)
    assert 0 < len(chosen) < SHAPE[0]
    for z in chosen:
        k = params.artifact_sections[z]
        oy, ox = params.artifact_offsets[z]
        window = (k, slice(oy, oy + SHAPE[1]), slice(ox, ox + SHAPE[2]))
        a = alpha[window]
        expected = source[z] * (1 - a) + values[window] / 255.0 * a
        np.testing.assert_allclose(raw[z], expected, rtol=1e-6)
    intact = params.kinds == INTACT
    np.testing.assert_array_equal(raw[intact], source[intact])


def test_same_seed_replays_and_different_seeds_differ():
    node = SectionDefectAugment(RAW, prob_missing=0.2, prob_low_contrast=0.2)
    (first, _), (again, _), (other, _) = run(node, [5, 5, 6])
    np.testing.assert_array_equal(first[RAW].data, again[RAW].data)
    assert not np.array_equal(first[RAW].data, other[RAW].data)


def test_p_zero_leaves_raw_unchanged():
    node = SectionDefectAugment(RAW, prob_missing=0.5, prob_low_contrast=0.5, p=0.0)
    for batch, _ in run(node, range(5)):
        np.testing.assert_array_equal(batch[RAW].data, SOURCES[RAW])


def test_sections_along_another_axis():
    node = SectionDefectAugment(RAW, prob_missing=0.5, prob_low_contrast=0, axis=2)
    ((batch, params),) = run(node, [7])
    assert len(params.kinds) == SHAPE[2]
    missing = params.kinds == MISSING
    np.testing.assert_array_equal(batch[RAW].data[:, :, missing], 0.0)
    np.testing.assert_array_equal(batch[RAW].data[:, :, ~missing], SOURCES[RAW][:, :, ~missing])


def test_an_artifact_volume_smaller_than_the_sections_is_a_data_error(tmp_path):
    container = tmp_path / "small.zarr"
    small = {"raw": np.zeros((3, 8, 8), np.uint8), "alpha": np.ones((3, 8, 8), np.float32)}
    write_datasets(container, small, VOXEL_SIZE, Coordinate(0, 0, 0), Coordinate(3, 8, 8), 3)
    node = SectionDefectAugment(
        RAW,
        prob_artifact=0.5,
        artifact_raw=str(container / "raw"),
        artifact_alpha=str(container / "alpha"),
    )
    with pytest.raises(DataError, match="artifact_raw: .*smaller within"), unwrap_voltrain_errors():
        run(node, [0])


def test_artifact_raw_and_alpha_of_different_shapes_are_a_data_error(tmp_path):
    container = tmp_path / "mismatch.zarr"
    arrays = {"raw": np.zeros((3, 20, 16), np.uint8), "alpha": np.ones((2, 20, 16), np.float32)}
    write_datasets(container, arrays, VOXEL_SIZE, Coordinate(0, 0, 0), Coordinate(3, 20, 16), 3)
    node = SectionDefectAugment(
        RAW,
        prob_artifact=0.5,
        artifact_raw=str(container / "raw"),
        artifact_alpha=str(container / "alpha"),
    )
    with pytest.raises(DataError, match="artifact_alpha: .*must match"), unwrap_voltrain_errors():
        run(node, [0])
