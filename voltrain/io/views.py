"""Chunked, numpy-like views of stored arrays that are not zarr arrays, and value views.

Every view has ``shape``, ``dtype``, ``ndim``, ``chunks`` and ``view[box] -> np.ndarray``,
the interface that ``funlib.persistence.Array`` (through dask) and voltrain's chunk cache
read from. Loader workers thus read HDF5 and N5 volumes chunk by chunk, as they read zarr.
"""

from __future__ import annotations

import numpy as np

# Chunk shape assumed for contiguous (unchunked) HDF5 datasets: reads of any box work, this
# only sets the granularity of the chunk cache.
CONTIGUOUS_CHUNK = 64
# Seconds one N5 read through tensorstore may take before it is an error.
READ_TIMEOUT_S = 300.0


class _View:
    """Shared shape bookkeeping of the views below."""

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]


class Hdf5Array(_View):
    """An h5py dataset, read box by box; its own chunking, or 64^3 blocks if contiguous."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.shape = tuple(dataset.shape)
        self.dtype = np.dtype(dataset.dtype)
        self.chunks = tuple(dataset.chunks or (min(CONTIGUOUS_CHUNK, s) for s in self.shape))

    def __getitem__(self, box) -> np.ndarray:
        return np.asarray(self.dataset[box])


class TensorStoreArray(_View):
    """A tensorstore array (here: an N5 dataset, axes already in numpy order)."""

    def __init__(self, store):
        self.store = store
        self.shape = tuple(int(s) for s in store.shape)
        self.dtype = np.dtype(store.dtype.numpy_dtype)
        self.chunks = tuple(int(c) for c in store.chunk_layout.read_chunk.shape)

    def __getitem__(self, box) -> np.ndarray:
        return np.asarray(self.store[box].read().result(timeout=READ_TIMEOUT_S))


class LabelArray(_View):
    """Labels whose background id is swapped with 0, so that 0 means background downstream.

    Voxels equal to ``background`` read as 0 and voxels equal to 0 read as ``background``:
    a swap keeps every object's id distinct.
    """

    def __init__(self, source, background: int):
        self.source = source
        self.background = background
        self.shape = tuple(source.shape)
        self.dtype = np.dtype(source.dtype)
        self.chunks = tuple(source.chunks)

    def __getitem__(self, box) -> np.ndarray:
        data = np.array(self.source[box], copy=True)
        is_background = data == self.background
        data[data == 0] = self.background
        data[is_background] = 0
        return data


class MaskArray(_View):
    """A mask of any dtype read as uint8 0/1: nonzero (or True) voxels are trusted."""

    def __init__(self, source):
        self.source = source
        self.shape = tuple(source.shape)
        self.dtype = np.dtype(np.uint8)
        self.chunks = tuple(source.chunks)

    def __getitem__(self, box) -> np.ndarray:
        data = np.asarray(self.source[box])
        if data.dtype == bool:
            return data.view(np.uint8)
        return (data != 0).view(np.uint8)
