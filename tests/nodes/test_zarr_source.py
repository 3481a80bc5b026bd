"""ZarrSource: exact reads, zero padding outside the data, with and without a chunk cache."""

import gunpowder as gp
import numpy as np
import pytest
from funlib.geometry import Coordinate, Roi
from funlib.persistence import prepare_ds

from voltrain.kernels.chunk_cache import ChunkCache
from voltrain.nodes.zarr_source import ZarrSource

RAW = gp.ArrayKey("RAW")
VOXEL = Coordinate(4, 8, 8)
OFFSET = Coordinate(40, 80, 16)


@pytest.fixture
def stored(tmp_path):
    data = np.random.default_rng(0).integers(1, 256, size=(20, 24, 28), dtype=np.uint8)
    array = prepare_ds(
        str(tmp_path / "v.zarr" / "raw"),
        shape=data.shape,
        offset=OFFSET,
        voxel_size=VOXEL,
        chunk_shape=(8, 8, 8),
        dtype=np.uint8,
        mode="w",
    )
    array[array.roi] = data
    return array, data


@pytest.mark.parametrize("cache", [None, ChunkCache(2**20)])
def test_reads_the_box_and_pads_outside_the_valid_roi(stored, cache):
    array, data = stored
    valid = Roi(OFFSET + VOXEL * Coordinate(2, 0, 0), VOXEL * Coordinate(16, 24, 28))
    source = ZarrSource(RAW, array, valid_roi=valid, chunk_cache=cache)
    request = gp.BatchRequest()
    roi = Roi(OFFSET - VOXEL * Coordinate(3, 2, 1), VOXEL * Coordinate(12, 30, 9))
    request[RAW] = gp.ArraySpec(roi=roi)
    with gp.build(source):
        for _ in range(2):  # the second read comes from the cache
            batch = source.request_batch(request)
            expected = np.zeros((12, 30, 9), np.uint8)
            expected[5:, 2:26, 1:] = data[2:9, :, :8]
            np.testing.assert_array_equal(batch[RAW].data, expected)
    assert batch[RAW].spec.roi == roi
    assert ("ZarrSource", "provide") in batch.profiling_stats.get_timing_summaries()
