"""From affinities to a segmentation: fragments, a region graph, agglomeration.

``segment_array`` segments a volume in memory; ``voltrain segment`` runs the same steps
blockwise over a zarr volume with daisy. Exports load on first use, so that daisy's worker
processes import only what they run.
"""

from importlib import import_module

_EXPORTS = {
    "SegmentConfig": "voltrain.segment.config",
    "segment_array": "voltrain.segment.volume",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'voltrain.segment' has no attribute '{name}'")
    return getattr(import_module(_EXPORTS[name]), name)
