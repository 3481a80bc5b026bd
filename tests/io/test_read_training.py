"""Training samples do not depend on the format the volume is stored in: the same volume as
plain zarr, OME-NGFF 0.4, N5 and CREMI-style HDF5 (with another background id and a bool
mask) gives identical samples, targets and weights for the same seeds."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from funlib.persistence import open_ds
from io_writers import write_n5, write_ome_image

from tests.helpers import experiment_dict
from voltrain.experiment import parse_config
from voltrain.models.unet import build_model

ELASTIC = {"type": "elastic", "control_point_spacing": [40] * 3, "jitter_sigma": [8] * 3}
# the id that marks background in the HDF5 copy (as some exports use the dtype's maximum)
HDF5_BACKGROUND = 2**32 - 1


@pytest.fixture(scope="module")
def reference(volume, tmp_path_factory) -> dict:
    """The synthetic volume with some cells made background (0), as plain zarr arrays."""
    arrays = {name: open_ds(str(volume / name)) for name in ("raw", "labels", "mask")}
    data = {name: array[array.roi] for name, array in arrays.items()}
    data["labels"] = np.where(data["labels"] <= 5, 0, data["labels"])
    container = tmp_path_factory.mktemp("reference") / "cells.zarr"
    for name, values in data.items():
        array = zarr.create_array(str(container), name=name, data=values, chunks=(32,) * 3)
        array.attrs.update(voxel_size=[8, 8, 8], offset=list(arrays["raw"].roi.offset))
    return {"container": container, "data": data, "offset": list(arrays["raw"].roi.offset)}


def _hdf5_copy(reference: dict, directory: Path) -> dict:
    path = directory / "sample_A.hdf"
    labels = reference["data"]["labels"].astype(np.uint32)
    labels = np.where(labels == 0, HDF5_BACKGROUND, labels).astype(np.uint32)
    stored = {
        "volumes/raw": reference["data"]["raw"],
        "volumes/labels/neuron_ids": labels,
        "volumes/labels/mask": reference["data"]["mask"].astype(bool),
    }
    with h5py.File(path, "w") as file:
        for key, values in stored.items():
            file.create_dataset(key, data=values, chunks=(16, 16, 16), compression="gzip")
            file[key].attrs.update(resolution=[8, 8, 8], offset=reference["offset"])
    return {
        "raw": f"{path}/volumes/raw",
        "gt": f"{path}/volumes/labels/neuron_ids",
        "mask": f"{path}/volumes/labels/mask",
        "background": HDF5_BACKGROUND,
    }


def _ome_copy(reference: dict, directory: Path) -> dict:
    container = directory / "cells.ome.zarr"
    zarr.open_group(str(container), mode="w", zarr_format=2)
    for name, values in reference["data"].items():
        write_ome_image(container / name, [values], (8, 8, 8), reference["offset"], "0.4", chunk=32)
    return {
        "raw": {"path": str(container / "raw"), "scale": "s0"},
        "gt": {"path": str(container / "labels"), "voxel_size": [8, 8, 8]},
        "mask": str(container / "mask" / "s0"),
    }


def _n5_copy(reference: dict, directory: Path) -> dict:
    container = directory / "cells.n5"
    for name, values in reference["data"].items():
        attributes = {"resolution": [8, 8, 8], "offset": reference["offset"][::-1]}
        write_n5(container / name, values, attributes)
    return {
        name: str(container / stored)
        for name, stored in (("raw", "raw"), ("gt", "labels"), ("mask", "mask"))
    }


def _samples(dataset: dict, seeds: range) -> list[dict]:
    raw = experiment_dict(Path("unused"), augments=[ELASTIC], min_masked=0.3)
    raw["data"]["train"][0].update(dataset)
    config = parse_config(raw)
    trainer = config.trainer.build()
    model = build_model(config.model, 1, config.task.build().num_channels)
    trainer.build_batch_provider(config.data.train, model, config.task)
    return [trainer.pipeline.request_sample(seed) for seed in seeds]


SEEDS = range(2)


@pytest.fixture(scope="module")
def expected(reference) -> list[dict]:
    """Samples drawn from the plain zarr reference."""
    container = reference["container"]
    names = {"raw": "raw", "gt": "labels", "mask": "mask"}
    samples = _samples({key: str(container / name) for key, name in names.items()}, SEEDS)
    assert any((s["gt"] == 0).any() for s in samples)  # background takes part
    return samples


@pytest.mark.parametrize("copy", [_hdf5_copy, _ome_copy, _n5_copy], ids=["hdf5", "ome", "n5"])
def test_every_format_gives_the_reference_samples(copy, reference, expected, tmp_path):
    got = _samples(copy(reference, tmp_path), SEEDS)
    for want, have in zip(expected, got, strict=True):
        for key in ("raw", "gt", "mask", "target", "weight", "output_offset"):
            np.testing.assert_array_equal(have[key], want[key], err_msg=key)
