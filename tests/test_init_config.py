"""``voltrain init``: the config it writes suits the voxel size, is valid as written, and
trains."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from voltrain.cli import main
from voltrain.experiment import load_config
from voltrain.inference import check_centred
from voltrain.init_geometry import (
    choose_input_shape,
    downsample_factors,
    kernel_sizes,
    target_shape,
)
from voltrain.init_task import TASK_NAMES, world_window
from voltrain.models.unet import UNetConfig, build_model, output_shape
from voltrain.schema import experiment_schema
from voltrain.synthetic import make_synthetic_volume


@pytest.mark.parametrize(
    "voxel_size, levels, expected",
    [
        ((40, 4, 4), 3, [[1, 3, 3], [1, 3, 3], [3, 3, 3]]),
        ((8, 8, 8), 2, [[2, 2, 2], [2, 2, 2]]),
        ((4, 4, 40), 3, [[3, 3, 1], [3, 3, 1], [3, 3, 3]]),
        ((30, 8, 8), 3, [[1, 3, 3], [3, 3, 3], [3, 3, 3]]),
    ],
)
def test_downsampling_makes_voxels_near_isotropic_before_pooling_the_coarse_axis(
    voxel_size, levels, expected
):
    assert downsample_factors(voxel_size, levels) == expected


@pytest.mark.parametrize(
    "voxel_size, levels, expected",
    [
        # configs/em_anisotropic.yaml's kernels: in-plane until 36 nm has caught up with 40
        ((40, 4, 4), 3, [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]]),
        ((30, 8, 8), 2, [[1, 3, 3], [3, 3, 3], [3, 3, 3]]),
        ((4, 4, 40), 2, [[3, 3, 1], [3, 3, 1], [3, 3, 3]]),
        ((8, 8, 8), 3, None),  # isotropic: the default 3 x 3 x 3 everywhere
        ((12, 8, 8), 2, None),  # less than 2x anisotropic
    ],
)
def test_kernels_stay_in_plane_while_the_plane_is_much_finer(voxel_size, levels, expected):
    assert kernel_sizes(voxel_size, downsample_factors(voxel_size, levels)) == expected


@pytest.mark.parametrize(
    "voxel_size, expected",
    [((8, 8, 8), 80.0), ((40, 4, 4), 80.0), ((4, 4, 4), 40.0), ((50, 4, 4), 100.0)],
)
def test_lsd_sigma_and_distance_scale_span_several_voxels_on_every_axis(voxel_size, expected):
    # 80 nm at 8 nm is the LSD paper's sigma; at least two voxels along the coarse axis
    assert world_window(voxel_size) == expected
    assert all(expected / v >= 2 for v in voxel_size)


def test_input_shape_is_valid_fits_the_labels_and_grows_with_the_budget():
    model = UNetConfig(downsample_factors=[[1, 3, 3], [1, 3, 3], [3, 3, 3]])
    gt_shape = (10_000,) * 3
    shapes = [
        choose_input_shape(model, target_shape(model, voxels), gt_shape, [1, 2])
        for voxels in (2e6, 8e6)
    ]
    for shape in shapes:
        output_shape(model, shape)  # raises for a shape the U-Net cannot take
        assert shape[1] == shape[2]
    assert np.prod(shapes[0]) < np.prod(shapes[1])
    small_gt = (60, 120, 100)
    shape = choose_input_shape(model, target_shape(model, 8e6), small_gt, [1, 2])
    assert all(o <= g for o, g in zip(output_shape(model, shape), small_gt, strict=True))


CASES = {
    # voxel size, volume shape, levels, --input-size
    "serial-section EM": ((40, 4, 4), (16, 48, 48), 1, "30000"),
    "mildly anisotropic": ((12, 4, 4), (32, 64, 64), 2, "60k"),
    "isotropic": ((8, 8, 8), (32, 32, 32), 1, "32,32,32"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_init_writes_a_config_that_trains_as_written(case, tmp_path, capsys):
    voxel_size, shape, levels, input_size = CASES[case]
    data = make_synthetic_volume(
        tmp_path / "data.zarr",
        shape=shape,
        voxel_size=voxel_size,
        num_cells=12,
        mask_fraction=0.7,
        chunk_shape=(8, 16, 16),
    )
    out = tmp_path / "config.yaml"
    argv = ["init", "--raw", str(data.container / data.raw), "--gt"]
    argv += [str(data.container / data.labels), "--mask", str(data.container / data.mask)]
    argv += ["--levels", str(levels), "--num-fmaps", "3", "--input-size", input_size]
    assert main([*argv, "--out", str(out)]) == 0
    assert "input shape:" in capsys.readouterr().out

    config = load_config(out)  # valid exactly as written
    # blocks can be centred on their output, as voltrain predict and validation need
    input_shape = config.trainer.input_shape
    check_centred(input_shape, output_shape(config.model, input_shape), "init")
    text = out.read_text()
    _check_against_schema(yaml.safe_load(text))
    assert "# A shape the U-Net accepts" in text and "trainer.input_shape" not in text
    trainer = config.trainer
    mask = np.asarray(load_mask(data))
    assert trainer.min_masked == pytest.approx(min(0.5, mask.mean() / 2), abs=1e-3)
    assert trainer.num_data_fetchers >= 1
    elastic, simple = trainer.augments[0], trainer.augments[1]
    if voxel_size[0] >= 2 * voxel_size[1]:
        assert config.model.kernel_sizes[0] == [1, 3, 3]
        assert config.model.kernel_sizes[-1] == [3, 3, 3]
    else:
        assert config.model.kernel_sizes is None
    if voxel_size[0] > voxel_size[1]:
        assert elastic.rotation_axes == [1, 2] and simple.transpose_axes == [1, 2]
        assert elastic.jitter_sigma[0] == 0 and elastic.jitter_sigma[1] > 0
        assert trainer.input_shape[1] == trainer.input_shape[2]
    else:
        assert elastic.rotation_axes is None and simple.transpose_axes == [0, 1, 2]
        assert len(set(trainer.input_shape)) == 1

    _check_trains(out, tmp_path)


def _check_trains(config, tmp_path) -> None:
    """Two training iterations through the CLI on ``config`` end with a finite loss."""
    # the test's copy uses no loader processes; the file itself keeps the CPU count
    raw = yaml.safe_load(config.read_text())
    raw["trainer"]["num_data_fetchers"] = 0
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    argv = ["train", str(copy), "--out", str(run), "--iterations", "2"]
    assert main([*argv, "--device", "cpu", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["iteration"] == 2 and np.isfinite(rows[-1]["loss"])


def _check_against_schema(config: dict) -> None:
    try:
        import jsonschema
    except ImportError:  # the schema's own tests cover its structure
        return
    jsonschema.validate(config, experiment_schema(), cls=jsonschema.Draft202012Validator)


def load_mask(data) -> np.ndarray:
    import zarr

    return zarr.open_array(str(data.container / data.mask), mode="r")[:] > 0


def test_init_refuses_what_it_cannot_honour_and_writes_nothing(volume, tmp_path, capsys):
    flags = ["--raw", str(volume / "raw"), "--gt", str(volume / "labels")]
    out = tmp_path / "config.yaml"
    assert main(["init", *flags, "--levels", "6", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--raw" in error and "--levels" in error
    assert not out.exists()
    assert main(["init", *flags, "--input-size", "lots", "--out", str(out)]) == 2
    assert "--input-size" in capsys.readouterr().err and not out.exists()
    out.write_text("mine\n")
    assert main(["init", *flags, "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "mine\n"


def test_init_refuses_an_empty_mask_and_a_network_over_the_memory(volume, tmp_path, capsys):
    from funlib.persistence import prepare_ds

    empty = prepare_ds(str(tmp_path / "empty.zarr/mask"), (64,) * 3, (8,) * 3, dtype="u1")
    assert not empty[empty.roi].any()
    flags = ["--raw", str(volume / "raw"), "--gt", str(volume / "labels")]
    out = tmp_path / "config.yaml"
    mask = ["--mask", str(tmp_path / "empty.zarr/mask")]
    assert main(["init", *flags, *mask, "--out", str(out)]) == 2
    assert "--mask" in capsys.readouterr().err and not out.exists()
    assert main(["init", *flags, "--memory", "0.01", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "--memory" in error and "GiB" in error and not out.exists()


def _init_argv(data, out, *flags: str) -> list[str]:
    argv = ["init", "--raw", str(data.container / data.raw), "--gt"]
    argv += [str(data.container / data.labels), "--levels", "2", "--num-fmaps", "3"]
    return [*argv, "--input-size", "30000", "--out", str(out), *flags]


@pytest.fixture(scope="module")
def serial_sections(tmp_path_factory):
    """A tiny 40 x 4 x 4 nm volume, like serial-section EM."""
    container = tmp_path_factory.mktemp("sections") / "data.zarr"
    return make_synthetic_volume(
        container, shape=(16, 48, 48), voxel_size=(40, 4, 4), num_cells=6, chunk_shape=(8, 16, 16)
    )


@pytest.mark.parametrize("task", TASK_NAMES)
def test_init_writes_every_task_with_a_network_that_takes_its_input(
    task, serial_sections, tmp_path, capsys
):
    out = tmp_path / "config.yaml"
    assert main(_init_argv(serial_sections, out, "--task", task)) == 0
    assert f"task:        {task}" in capsys.readouterr().out
    config = load_config(out)
    assert config.task.type == task
    assert config.model.kernel_sizes[0] == [1, 3, 3]
    shape = tuple(config.trainer.input_shape)
    built = config.task.build()
    with torch.device("meta"):  # the real forward pass, nothing allocated
        model = build_model(config.model, 1, built.num_channels)
        output = model(torch.empty(1, 1, *shape))
    assert output.shape[1] == built.num_channels
    assert tuple(output.shape[2:]) == tuple(output_shape(config.model, shape))
    text = out.read_text()
    _check_against_schema(yaml.safe_load(text))
    # only tasks with affinity channels can be segmented; z sections are flooded one by one
    assert ("segment:" in text) == (task in ("affinities", "affinities+lsd"))
    if "segment:" in text:
        assert config.segment.fragments_per_section
    if task in ("lsd", "affinities+lsd"):
        # max(10 x 4 nm, 2 x 40 nm): two sections, twenty in-plane voxels
        assert config.task.sigma == [80.0, 80.0, 80.0] and "2 x coarsest voxel" in text
    if task == "distances":
        assert config.task.scale == 80.0 and "2 x coarsest voxel" in text


def test_init_counts_the_classes_or_demands_the_flag(volume, tmp_path, monkeypatch, capsys):
    import zarr
    from funlib.geometry import Coordinate
    from funlib.persistence import prepare_ds

    labels = zarr.open_array(str(volume / "labels"), mode="r")[:]
    classes = prepare_ds(
        str(tmp_path / "classes.zarr/classes"),
        labels.shape,
        offset=Coordinate(16, 32, 48),
        voxel_size=Coordinate(8, 8, 8),
        dtype="u1",
    )
    ids = (labels % 4).astype("u1")  # classes 0..3
    ids[labels % 5 == 4] = 255  # the common mark of unlabelled voxels
    classes[classes.roi] = ids
    argv = ["init", "--raw", str(volume / "raw"), "--gt", str(tmp_path / "classes.zarr/classes")]
    argv += ["--task", "multiclass", "--levels", "1", "--num-fmaps", "3"]
    out = tmp_path / "config.yaml"
    assert main([*argv, "--out", str(out)]) == 0
    task = load_config(out).task
    assert task.num_classes == 4 and task.ignore_label == 255
    assert "largest class id in the labels plus one" in out.read_text()

    # labels too large to scan: the flag is demanded, nothing is written
    monkeypatch.setattr("voltrain.init_task.MAX_SCAN_VOXELS", 1000)
    other = tmp_path / "other.yaml"
    assert main([*argv, "--out", str(other)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--num-classes" in error and "--gt" in error
    assert not other.exists()
    assert main([*argv, "--num-classes", "6", "--out", str(other)]) == 0
    assert load_config(other).task.num_classes == 6
    assert "task:        multiclass (num_classes 6)" in capsys.readouterr().out
    binary = [*argv, "--task", "binary", "--num-classes", "6"]  # the last --task wins
    assert main([*binary, "--out", str(other), "--force"]) == 2
    assert "--num-classes is for --task multiclass" in capsys.readouterr().err


def test_an_init_written_lsd_config_trains(serial_sections, tmp_path):
    out = tmp_path / "config.yaml"
    assert main(_init_argv(serial_sections, out, "--task", "affinities+lsd")) == 0
    _check_trains(out, tmp_path)
