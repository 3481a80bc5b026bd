"""ChunkCache: reads what zarr reads, decodes each chunk once, stays within its budget."""

import numpy as np
import zarr

from voltrain.kernels.chunk_cache import ChunkCache


def _array(tmp_path, shape=(40, 50, 30), chunks=(16, 16, 16)):
    data = np.random.default_rng(0).integers(0, 2**40, size=shape, dtype=np.uint64)
    array = zarr.create_array(
        str(tmp_path / "a.zarr"), shape=shape, chunks=chunks, dtype=data.dtype
    )
    array[...] = data
    return array, data


def test_reads_equal_zarr_reads_for_any_box(tmp_path):
    array, data = _array(tmp_path)
    cache = ChunkCache(max_bytes=10**8)
    rng = np.random.default_rng(1)
    for _ in range(20):
        begin = [int(rng.integers(0, n - 1)) for n in data.shape]
        end = [int(rng.integers(b + 1, n + 1)) for b, n in zip(begin, data.shape, strict=True)]
        box = tuple(slice(b, e) for b, e in zip(begin, end, strict=True))
        out = np.empty(tuple(e - b for b, e in zip(begin, end, strict=True)), data.dtype)
        cache.read("a", array, box, out)
        np.testing.assert_array_equal(out, data[box])


def test_each_chunk_is_decoded_once_while_it_fits(tmp_path):
    array, data = _array(tmp_path)
    cache = ChunkCache(max_bytes=10**8)
    box = (slice(3, 37), slice(5, 45), slice(0, 30))
    out = np.empty((34, 40, 30), data.dtype)
    cache.read("a", array, box, out)
    misses = cache.misses
    cache.read("a", array, box, out)
    assert cache.misses == misses and cache.hits == misses
    np.testing.assert_array_equal(out, data[box])


def test_memory_stays_within_the_budget(tmp_path):
    array, data = _array(tmp_path)
    chunk_bytes = 16**3 * 8
    cache = ChunkCache(max_bytes=5 * chunk_bytes)
    out = np.empty(data.shape, data.dtype)
    cache.read("a", array, tuple(slice(0, n) for n in data.shape), out)
    np.testing.assert_array_equal(out, data)
    assert cache.bytes <= 5 * chunk_bytes
