"""voltrain: train 3D networks on large zarr microscopy volumes."""

__version__ = "0.1.0"
