import gunpowder as gp
import numpy as np
import pytest
import torch
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array

from voltrain.models.unet import UNetConfig, build_model
from voltrain.nodes.predict import Predict

VOXEL_SIZE = Coordinate(4, 2, 2)
OFFSET = Coordinate(8, 0, 6)
SHAPE = (52, 52, 64)
# One level, 3^3 kernels: input 36 -> output 20 voxels, 8 voxels of context per side.
CONFIG = UNetConfig(num_fmaps=2, fmap_inc_factor=2, downsample_factors=[[2, 2, 2]], batch_norm=True)
CONTEXT = Coordinate(8, 8, 8) * VOXEL_SIZE
RAW, PREDICTION = gp.ArrayKey("RAW"), gp.ArrayKey("PREDICTION")


@pytest.fixture
def raw():
    return np.random.default_rng(0).random(SHAPE, dtype=np.float32)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(CONFIG, 1, 3)  # left in training mode: the node must switch it


def predict(raw, model, rois):
    pipeline = gp.ArraySource(RAW, Array(raw, OFFSET, VOXEL_SIZE), interpolatable=True)
    pipeline += Predict(model, RAW, PREDICTION, CONTEXT, torch.sigmoid)
    outputs = []
    with gp.build(pipeline):
        for roi in rois:
            request = gp.BatchRequest()
            request[PREDICTION] = gp.ArraySpec(roi=roi)
            outputs.append(pipeline.request_batch(request)[PREDICTION])
    return outputs


def test_prediction_is_the_activated_output_of_the_input_grown_by_context(raw, model):
    roi = Roi(OFFSET + Coordinate(10, 12, 14) * VOXEL_SIZE, Coordinate(20, 20, 20) * VOXEL_SIZE)
    (prediction,) = predict(raw, model, [roi])

    begin = (roi.begin - CONTEXT - OFFSET) / VOXEL_SIZE
    crop = raw[tuple(slice(b, b + 36) for b in begin)]
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(torch.from_numpy(crop.copy())[None, None]))[0]
    assert prediction.spec.roi == roi
    assert prediction.spec.voxel_size == VOXEL_SIZE
    assert prediction.data.dtype == np.float32
    assert prediction.data.shape == (3, 20, 20, 20)
    np.testing.assert_allclose(prediction.data, expected.numpy(), rtol=0, atol=1e-6)


def test_adjacent_blocks_fit_together_like_one_larger_block(raw, model):
    begin = OFFSET + Coordinate(8, 8, 8) * VOXEL_SIZE
    block = Coordinate(20, 20, 20) * VOXEL_SIZE
    left = Roi(begin, block)
    right = left.shift(Coordinate(0, 0, block[2]))
    both = Roi(begin, block * Coordinate(1, 1, 2))
    first, second, whole = predict(raw, model, [left, right, both])

    tiled = np.concatenate([first.data, second.data], axis=3)
    np.testing.assert_allclose(tiled, whole.data, rtol=0, atol=1e-5)


def test_a_roi_off_the_voxel_grid_is_an_error(raw, model):
    roi = Roi(OFFSET + CONTEXT + Coordinate(1, 0, 0), Coordinate(20, 20, 20) * VOXEL_SIZE)
    with pytest.raises(Exception, match="not aligned to the voxel size"):
        predict(raw, model, [roi])
