"""Write test volumes with each format's own library: OME-NGFF with zarr (ome-zarr is not
installed), N5 with tensorstore."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorstore as ts
import zarr


def write_ome_image(
    group_path: str | Path | zarr.storage.StoreLike,
    levels: list[np.ndarray],
    voxel_size: tuple[float, ...],
    offset: tuple[float, ...],
    version: str = "0.5",
    unit: str = "nanometer",
    level_factor: int = 2,
    global_scale: list[float] | None = None,
    chunk: int = 8,
) -> None:
    """An image whose level ``i`` has voxel size ``voxel_size * level_factor**i``.

    Version 0.4 is written as zarr v2 (``multiscales`` attribute), 0.5 as zarr v3
    (``ome.multiscales``), as the two specs require.
    """
    group = zarr.open_group(group_path, mode="w", zarr_format=2 if version == "0.4" else 3)
    datasets = []
    for i, data in enumerate(levels):
        group.create_array(f"s{i}", data=data, chunks=(chunk,) * data.ndim)
        factor = level_factor**i
        datasets.append(
            {
                "path": f"s{i}",
                "coordinateTransformations": [
                    {"type": "scale", "scale": [float(v * factor) for v in voxel_size]},
                    {"type": "translation", "translation": [float(o) for o in offset]},
                ],
            }
        )
    multiscale = {
        "axes": [{"name": n, "type": "space", "unit": unit} for n in "zyx"],
        "datasets": datasets,
        "name": "image",
    }
    if global_scale is not None:
        multiscale["coordinateTransformations"] = [{"type": "scale", "scale": global_scale}]
    if version == "0.4":
        group.attrs["multiscales"] = [{"version": "0.4", **multiscale}]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale]}


def downsample(data: np.ndarray) -> np.ndarray:
    """Every second voxel along each axis (what a label pyramid's next level holds)."""
    return np.ascontiguousarray(data[::2, ::2, ::2])


def write_n5(path: Path, data: np.ndarray, attributes: dict, block: int = 32) -> None:
    """An N5 dataset as gunpowder's and z5py's writers leave it: axes fastest-first
    (x, y, z) in ``dimensions``, and ``attributes`` (resolution, offset) added to them."""
    spec = {
        "driver": "n5",
        "kvstore": {"driver": "file", "path": str(path)},
        "metadata": {
            "dimensions": list(data.shape[::-1]),
            "blockSize": [block] * data.ndim,
            "dataType": str(data.dtype),
            "compression": {"type": "gzip"},
        },
        "create": True,
    }
    ts.open(spec).result().write(data.T).result()
    metadata = json.loads((path / "attributes.json").read_text())
    metadata.update(attributes)
    (path / "attributes.json").write_text(json.dumps(metadata))
