"""Array kernels the gunpowder nodes call: resampling, counter-based noise, the on-device
deform, per-augment random streams and the decoded-chunk cache. Nothing here is a node."""
