"""Labels and mask at a coarser voxel size than raw: training, snapshots, prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds, prepare_ds

from tests.helpers import experiment_dict
from voltrain.cli import main
from voltrain.errors import ConfigError, DataError
from voltrain.experiment import load_config, parse_config
from voltrain.io.write import level_path
from voltrain.models.unet import build_model
from voltrain.predict import predict
from voltrain.run import TrainingRun
from voltrain.run.checkpoint import save_checkpoint
from voltrain.synthetic import make_synthetic_volume

# the tiny U-Net maps 36^3 voxels of 4 nm to 10^3 of 8 nm: 8 fine voxels of context a side
CONTEXT = 32

ELASTIC = {
    "type": "elastic",
    "control_point_spacing": [40, 40, 40],
    "jitter_sigma": [4, 4, 4],
    "rotate": True,
}


def _coarsen(fine: Path, coarse: Path, name: str, factor: tuple[int, int, int]) -> None:
    """Write ``fine/name`` subsampled by ``factor`` at the coarser voxel size."""
    source = open_ds(str(fine / name))
    data = source[source.roi][:: factor[0], :: factor[1], :: factor[2]]
    target = prepare_ds(
        str(coarse / name),
        shape=data.shape,
        offset=source.roi.offset,
        voxel_size=source.voxel_size * Coordinate(factor),
        dtype=data.dtype,
        mode="w",
    )
    target[target.roi] = data


@pytest.fixture(scope="module")
def coarse_volume(tmp_path_factory) -> Path:
    """raw 64^3 at 4 nm; labels and mask 32^3 at 8 nm, over the same world ROI."""
    root = tmp_path_factory.mktemp("coarse")
    fine = root / "fine.zarr"
    container = root / "coarse.zarr"
    make_synthetic_volume(
        fine,
        shape=(64, 64, 64),
        voxel_size=(4, 4, 4),
        offset=(16, 32, 48),
        num_cells=12,
        mask_fraction=0.7,
        chunk_shape=(32, 32, 32),
        seed=3,
    )
    for name in ("labels", "mask"):
        _coarsen(fine, container, name, (2, 2, 2))
    _coarsen(fine, container, "raw", (1, 1, 1))
    # a smaller labelled region for validation: 2 blocks of 10 output voxels per axis
    labels = open_ds(str(container / "labels"))
    crop = prepare_ds(
        str(container / "labels_crop"),
        (20, 20, 20),
        offset=labels.roi.offset,
        voxel_size=labels.voxel_size,
        dtype=labels.dtype,
        mode="w",
    )
    crop[crop.roi] = labels[crop.roi]
    return container


def _config(container: Path, output_downsample=(2, 2, 2), **trainer) -> dict:
    raw = experiment_dict(container, **trainer)
    raw["model"]["output_downsample"] = list(output_downsample)
    return raw


def _train(config: dict, out: Path, steps: int) -> TrainingRun:
    run = TrainingRun(parse_config(config), out, "cpu")
    run.prepare(resume=False)
    with run.trainer:
        for _ in run.trainer.iterate(steps, run.model, run.optimizer, "cpu"):
            pass
    return run


def test_snapshot_gt_and_target_line_up_with_the_coarse_labels(coarse_volume, tmp_path):
    # input 36^3 at 4 nm -> 20^3 fine output -> 10^3 output voxels at 8 nm
    config = _config(coarse_volume, snapshot_interval=2, batch_size=1, min_masked=0.2)
    run = _train(config, tmp_path / "run", 2)
    group = tmp_path / "run" / "snapshots.zarr" / "2"
    arrays = {n: open_ds(level_path(group / n)) for n in ("raw", "gt", "target", "prediction")}
    assert arrays["raw"].voxel_size == Coordinate(4, 4, 4)
    assert arrays["raw"].shape == (36, 36, 36)
    for name in ("gt", "target", "prediction"):
        assert arrays[name].voxel_size == Coordinate(8, 8, 8), name
    assert arrays["gt"].shape == (10, 10, 10)
    assert arrays["prediction"].shape == (3, 10, 10, 10)
    gt = arrays["gt"]
    # the output region is on the gt grid and centred in raw: 8 fine voxels of context
    assert gt.roi.offset % Coordinate(8, 8, 8) == Coordinate(0, 0, 0)
    assert gt.roi.offset == arrays["raw"].roi.offset + Coordinate(32, 32, 32)
    labels = open_ds(str(coarse_volume / "labels"))
    expected = labels[Roi(gt.roi.offset, gt.roi.shape)]
    np.testing.assert_array_equal(gt[gt.roi], expected)
    # affinities along z at 8 nm: 1 where a voxel and the one 8 nm before it share a label
    target = arrays["target"][arrays["target"].roi]
    before = labels[Roi(gt.roi.offset - Coordinate(8, 0, 0), gt.roi.shape)]
    np.testing.assert_array_equal(target[0], (expected == before) & (expected > 0))
    assert run.model.in_channels == 1


def test_coarse_labels_train_behind_an_elastic_augment(coarse_volume, tmp_path):
    config = _config(coarse_volume, augments=[ELASTIC], min_masked=0.5, max_steps=2)
    run = TrainingRun(parse_config(config), tmp_path / "run", "cpu")
    run.prepare(resume=False)
    pipeline = run.trainer.pipeline
    for seed in range(4):
        sample = pipeline.request_sample(seed)
        assert sample["raw"].shape == (1, 36, 36, 36)
        assert sample["gt"].shape == sample["mask"].shape == (10, 10, 10)
        assert sample["target"].shape == (3, 10, 10, 10)
        assert sample["mask"].mean() >= 0.5
        # label ids are resampled by nearest neighbour: never blended into new ids
        ids = set(np.unique(open_ds(str(coarse_volume / "labels"))[:]).tolist())
        assert set(np.unique(sample["gt"]).tolist()) <= ids | {0}
        assert tuple(sample["output_offset"] % 8) == (0, 0, 0)


def test_gt_not_a_multiple_of_raw_voxel_size_is_one_line_exit_2(coarse_volume, tmp_path, capsys):
    odd = tmp_path / "odd.zarr"
    labels = open_ds(str(coarse_volume / "labels"))
    array = prepare_ds(
        str(odd / "labels"),
        shape=(20, 20, 20),
        offset=(0, 0, 0),
        voxel_size=(6, 6, 6),
        dtype=labels.dtype,
        mode="w",
    )
    array[array.roi] = 1
    config = _config(coarse_volume)
    config["data"]["train"][0]["gt"] = str(odd / "labels")
    config["data"]["train"][0]["mask"] = None
    with pytest.raises(DataError, match=r"gt voxel_size \(6, 6, 6\).*odd.zarr/labels.*raw"):
        TrainingRun(parse_config(config), tmp_path / "run", "cpu").prepare(resume=False)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "cli-run"
    code = main(["train", str(path), "--out", str(out), "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and "odd.zarr/labels" in lines[0] and "coarse.zarr/raw" in lines[0]
    assert not out.exists() and not (tmp_path / "run").exists()


def test_output_voxel_size_that_is_not_gts_is_a_config_error(coarse_volume, tmp_path):
    config = _config(coarse_volume, output_downsample=(1, 1, 1))
    with pytest.raises(ConfigError, match=r"model.output_downsample.*\(4, 4, 4\).*\(8, 8, 8\)"):
        TrainingRun(parse_config(config), tmp_path / "run", "cpu").prepare(resume=False)
    assert not (tmp_path / "run").exists()


def _whole_pass(model, raw_path: Path, roi: Roi) -> torch.Tensor:
    """Logits of one forward pass over ``roi`` grown by the context, zeros outside raw."""
    raw = open_ds(str(raw_path))
    grown = roi.grow((CONTEXT,) * 3, (CONTEXT,) * 3)
    data = np.zeros(grown.shape / raw.voxel_size, dtype=np.float32)
    inside = grown.intersect(raw.roi)
    begin = (inside.begin - grown.begin) / raw.voxel_size
    end = begin + inside.shape / raw.voxel_size
    data[tuple(slice(b, e) for b, e in zip(begin, end, strict=True))] = raw[inside] / 255.0
    with torch.no_grad():
        return model.eval()(torch.from_numpy(data)[None, None])[0].double()


def test_blockwise_validation_scores_at_the_labels_voxel_size(coarse_volume, tmp_path):
    config = _config(coarse_volume, validation_interval=1, validation={"mode": "blockwise"})
    config["task"] = {"type": "binary", "balance_weights": False}
    validate = dict(config["data"]["train"][0], name="validate", mask=None)
    config["data"]["validate"] = [dict(validate, gt=str(coarse_volume / "labels_crop"))]
    run = TrainingRun(parse_config(config), tmp_path / "run", "cpu")
    run.prepare(resume=False)
    scores = run.trainer.validator.evaluate(run.model)
    gt = open_ds(str(coarse_volume / "labels_crop"))
    logits = _whole_pass(run.model, coarse_volume / "raw", gt.roi)
    assert logits.shape == (1, *gt.shape)
    target = torch.from_numpy((gt[gt.roi] > 0).astype(np.float64))[None]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    expected = float(bce.mean())
    assert scores["validation_loss"] == pytest.approx(expected, rel=1e-5)


def test_predict_writes_the_output_at_the_labels_voxel_size(coarse_volume, tmp_path):
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(_config(coarse_volume)))
    config = load_config(config_path)
    torch.manual_seed(0)
    model = build_model(config.model, 1, 3)
    checkpoint = save_checkpoint(tmp_path, 1, {"model": model.state_dict(), "iteration": 1})
    output = tmp_path / "out.zarr" / "pred"
    roi = Roi((16, 32, 48), (160, 160, 160))  # 2 blocks of 10 output voxels per axis
    str_roi = "16,32,48:160,160,160"
    raw_path = str(coarse_volume / "raw")
    predict(config_path, checkpoint, raw_path, str(output), roi=str_roi, progress=False)
    prediction = open_ds(level_path(output))
    assert prediction.voxel_size == Coordinate(8, 8, 8)
    assert prediction.roi == roi and prediction.shape == (3, 20, 20, 20)
    expected = torch.sigmoid(_whole_pass(model, coarse_volume / "raw", roi)).numpy()
    assert expected.std() > 0.01
    np.testing.assert_allclose(prediction[:], expected, rtol=0, atol=1e-5)


def _intensity(ids: np.ndarray) -> np.ndarray:
    """A distinct raw intensity per label id; 0 (outside the volume) stays 0."""
    return np.where(ids > 0, (ids * 23) % 240 + 10, 0).astype(np.uint8)


@pytest.fixture(scope="module", params=[(2, 2, 2), (1, 2, 2)], ids=["isotropic", "in-plane"])
def painted_volume(request, tmp_path_factory) -> tuple[Path, tuple[int, int, int]]:
    """Labels 32^3 at 8 nm and raw painted from them at 8/factor nm: every raw voxel holds
    the intensity of the label it lies in, so raw shows where gt must be."""
    factor = request.param
    root = tmp_path_factory.mktemp("painted")
    make_synthetic_volume(
        root / "labels.zarr",
        shape=(32, 32, 32),
        voxel_size=(8, 8, 8),
        offset=(16, 32, 48),
        num_cells=10,
        chunk_shape=(32, 32, 32),
        seed=4,
    )
    labels = open_ds(str(root / "labels.zarr" / "labels"))
    ids = labels[labels.roi]
    raw = _intensity(ids)
    for axis, f in enumerate(factor):
        raw = np.repeat(raw, f, axis=axis)
    container = root / "painted.zarr"
    for name, data, voxel_size in (
        ("raw", raw, Coordinate(8, 8, 8) / Coordinate(factor)),
        ("labels", ids, Coordinate(8, 8, 8)),
    ):
        array = prepare_ds(
            str(container / name),
            data.shape,
            offset=labels.roi.offset,
            voxel_size=voxel_size,
            dtype=data.dtype,
            mode="w",
        )
        array[array.roi] = data
    return container, factor


@pytest.mark.parametrize("rotate", [False, True], ids=["mirror-transpose", "elastic-rotation"])
def test_augmented_gt_stays_registered_with_raw(painted_volume, rotate):
    container, factor = painted_volume
    augments = [{"type": "simple", "transpose_axes": [1, 2]}]
    if rotate:  # fused: one map for raw (linear, fine grid) and gt (nearest, coarse grid)
        elastic = dict(ELASTIC, jitter_sigma=[0, 0, 0], rotation_axes=[1, 2])
        augments.insert(0, elastic)
    config = _config(container, factor, augments=augments, min_masked=0.0)
    config["data"]["train"][0]["mask"] = None
    model_config = parse_config(config)
    trainer = model_config.trainer.build()
    model = build_model(model_config.model, 1, 3)
    trainer.build_batch_provider(model_config.data.train, model, model_config.task)
    output = Coordinate(20, 20, 20) / Coordinate(factor)
    context = (Coordinate(36, 36, 36) - output * Coordinate(factor)) / 2
    for seed in range(4):
        sample = trainer.pipeline.request_sample(seed)
        gt = sample["gt"]
        assert gt.shape == tuple(output)
        # raw voxels inside each output voxel: (z, fz, y, fy, x, fx)
        inner = sample["raw"][0][
            tuple(slice(c, c + o * f) for c, o, f in zip(context, output, factor, strict=True))
        ]
        blocks = inner.reshape(output[0], factor[0], output[1], factor[1], output[2], factor[2])
        expected = _intensity(gt) / 255.0
        uniform = np.ptp(blocks, axis=(1, 3, 5)) < 1e-6
        # away from label boundaries (where raw is interpolated), raw shows gt's label
        assert uniform.mean() > 0.3
        value = blocks[:, 0, :, 0, :, 0]
        np.testing.assert_allclose(value[uniform], expected[uniform], atol=1e-6)
        if not rotate:  # mirroring and transposing move whole voxels: exact everywhere
            assert uniform.all()
