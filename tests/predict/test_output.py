"""Prediction and segmentation outputs: OME-NGFF images at the input's world position."""

from __future__ import annotations

import numpy as np
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds, open_ome_ds
from iohub.ngff import open_ome_zarr

from voltrain.io.write import level_path
from voltrain.models.unet import UNetConfig
from voltrain.predict.output import OutputStore
from voltrain.predict.spec import PredictionSpec


def _spec(output) -> PredictionSpec:
    return PredictionSpec(
        model=UNetConfig(),
        task={"type": "affinities"},
        checkpoint="model.pt",
        input="in.zarr/raw",
        output=str(output),
        voxel_size=[40, 8, 8],
        units=["micrometer"] * 3,
        roi_offset=[400, 80, 64],
        roi_shape=[800, 160, 160],
        input_shape=[24, 24, 24],
        output_shape=[10, 10, 10],
        num_channels=3,
    )


def test_a_prediction_is_an_ome_image_at_the_inputs_world_position(tmp_path):
    output = tmp_path / "out.zarr" / "affs"
    store = OutputStore(str(output))
    store.create(_spec(output))

    with open_ome_zarr(output, mode="r") as image:
        assert image.get_effective_scale("s0") == [1, 40, 8, 8]
        assert image.get_effective_translation("s0") == [0, 400, 80, 64]
        assert [axis.unit for axis in image.axes[1:]] == ["micrometer"] * 3
    array = open_ds(level_path(output))
    assert array.roi == Roi((400, 80, 64), (800, 160, 160)) and array.dtype == np.float32
    assert array.shape == (3, 20, 20, 20) and array.data.chunksize == (3, 10, 10, 10)
    assert store.record()["complete"] is False
    store.set_complete(True)
    assert store.is_complete()


def test_a_segmentation_output_is_uint64_labels_the_ome_reader_places(tmp_path):
    output = tmp_path / "out.zarr" / "segmentation"
    store = OutputStore(str(output))
    store.create(_spec(output), labels=True)
    store.write_block(Roi((400, 80, 64), (400, 80, 80)), np.full((10, 10, 10), 7, np.uint64))

    labels = open_ome_ds(output, "s0")
    assert labels.dtype == np.uint64
    assert labels.voxel_size == Coordinate(40, 8, 8) and labels.units == ["micrometer"] * 3
    assert labels.roi == Roi((400, 80, 64), (800, 160, 160))
    assert labels[Roi((400, 80, 64), (400, 80, 80))].min() == 7
    assert labels[Roi((800, 80, 64), (400, 80, 80))].max() == 0
