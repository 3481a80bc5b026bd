"""Array kernels the gunpowder nodes call: resampling, counter-based noise, the on-device
deform, per-augment random streams and the decoded-chunk cache. Nothing here is a node."""

from voltrain.kernels import numba_cache

# Before any kernel module compiles: their cache must see edits to each other's helpers.
numba_cache.install()
