"""Hand-made label volumes and their affinities, written as zarr arrays for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
import zarr
from funlib.persistence import prepare_ds

NEIGHBORHOOD = [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]
VOXEL = (4, 2, 2)
OFFSET = (8, 4, 0)


def affinities_of(labels: np.ndarray, neighborhood=NEIGHBORHOOD) -> np.ndarray:
    """voltrain's affinity convention: channel c at p is 1 where p and p + offset_c carry
    the same nonzero label."""
    affinities = np.zeros((len(neighborhood), *labels.shape), dtype=np.float32)
    for channel, offset in enumerate(neighborhood):
        partner = np.zeros_like(labels)
        pairs = list(zip(offset, labels.shape, strict=True))
        target = tuple(slice(max(0, -o), s - max(0, o)) for o, s in pairs)
        source = tuple(slice(max(0, o), s - max(0, -o)) for o, s in pairs)
        partner[target] = labels[source]
        affinities[channel] = (labels == partner) & (labels != 0)
    return affinities


def write_array(path: Path, data: np.ndarray, voxel_size=VOXEL, offset=OFFSET) -> str:
    """Write ``data`` as a zarr array with voxel size and offset (channels first if 4D)."""
    container = Path(str(path).split(".zarr")[0] + ".zarr")
    zarr.open_group(str(container), mode="a")
    channels = data.ndim == 4
    array = prepare_ds(
        str(path),
        shape=data.shape,
        offset=tuple(v * o // v for v, o in zip(voxel_size, offset, strict=True)),
        voxel_size=voxel_size,
        axis_names=["c^", "z", "y", "x"] if channels else ["z", "y", "x"],
        types=["channel", "space", "space", "space"] if channels else ["space"] * 3,
        dtype=data.dtype,
        mode="w",
    )
    array[array.roi] = data
    return str(path)


def write_config(directory: Path, **segment) -> Path:
    """An affinities experiment whose only use here is its neighbourhood and ``segment:``."""
    config = {
        "data": {"train": [{"name": "x", "raw": "r.zarr/raw", "gt": "r.zarr/gt"}]},
        "task": {"type": "affinities", "neighborhood": NEIGHBORHOOD},
        "trainer": {"input_shape": [44, 44, 44]},
        "segment": segment,
    }
    path = directory / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def touching_cubes(interface_affinity: float) -> tuple[np.ndarray, np.ndarray]:
    """Two 6^3 cubes side by side along x, one background voxel around them; the
    affinities between them are ``interface_affinity`` instead of 0."""
    labels = np.zeros((8, 8, 14), dtype=np.uint64)
    labels[1:7, 1:7, 1:7] = 1
    labels[1:7, 1:7, 7:13] = 2
    affinities = affinities_of(labels)
    affinities[2, 1:7, 1:7, 7] = interface_affinity  # x-affinity of cube 2's first face
    return labels, affinities
