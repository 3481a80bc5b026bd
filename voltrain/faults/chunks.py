"""Naming the chunk behind a failed zarr read.

A corrupt chunk surfaces from zarr as a codec error ("Zstd decompression error") that
names neither the array nor the chunk. ``unreadable_chunk`` reads the chunks of the failed
box one by one to find the culprit, and returns an ``UnreadableChunkError`` naming both.
"""

from __future__ import annotations

import itertools

from voltrain.errors import UnreadableChunkError
from voltrain.faults import first_line


def unreadable_chunk(array, box: tuple[slice, ...], error: Exception) -> UnreadableChunkError:
    """The error to raise for a failed read of ``array[box]`` (a zarr array)."""
    name = str(getattr(array, "store_path", "")) or "a zarr array"
    name = name.removeprefix("file://")
    reason = first_line(error)
    chunk_shape = tuple(getattr(array, "chunks", ()) or ())
    if len(chunk_shape) != len(box):
        return UnreadableChunkError(f"array '{name}': voxels {_box_text(box)}: {reason}")
    for index in _chunk_indices(box, chunk_shape):
        chunk_box = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(index, chunk_shape, array.shape, strict=True)
        )
        try:
            array[chunk_box]
        except Exception as chunk_error:  # noqa: BLE001  (any codec or storage error)
            return UnreadableChunkError(
                f"array '{name}': chunk {_chunk_key(array, index)} (voxels "
                f"{_box_text(chunk_box)}) cannot be read: {first_line(chunk_error)}"
            )
    return UnreadableChunkError(f"array '{name}': voxels {_box_text(box)}: {reason}")


def _chunk_indices(box: tuple[slice, ...], chunk_shape: tuple[int, ...]):
    ranges = (
        range(s.start // c, (s.stop - 1) // c + 1) for s, c in zip(box, chunk_shape, strict=True)
    )
    return itertools.product(*ranges)


def _chunk_key(array, index: tuple[int, ...]) -> str:
    """The chunk's key in the store (``c/1/0/2`` in zarr v3, ``1.0.2`` in v2)."""
    try:
        return f"'{array.metadata.encode_chunk_key(index)}'"
    except Exception:  # noqa: BLE001  (older or other array types: the index will do)
        return str(tuple(index))


def _box_text(box: tuple[slice, ...]) -> str:
    return ", ".join(f"{s.start}:{s.stop}" for s in box)
