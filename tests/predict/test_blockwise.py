"""voltrain predict: blockwise output equals one pass, runs resume after a kill, failures and
bad input are reported, and no output claims to be complete before it is."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds, prepare_ds

from tests.helpers import experiment_dict
from voltrain.cli import main
from voltrain.experiment import load_config
from voltrain.io.write import level_path
from voltrain.models.unet import build_model
from voltrain.predict import OutputStore, predict
from voltrain.predict.output import RECORD_KEY, block_write_rois
from voltrain.predict.plan import plan_prediction
from voltrain.run.checkpoint import save_checkpoint

# The conftest volume: 64^3 voxels of 8 nm at offset (16, 32, 48); the tiny U-Net maps
# 36^3 to 20^3 voxels, so blocks write 160 nm and read 64 nm of context on each side.
VOXEL = 8
CONTEXT = 8 * VOXEL
INPUT_ROI = Roi((16, 32, 48), (512, 512, 512))
BLOCKS = 64  # 4 per axis, the last one overhanging the input


@pytest.fixture(scope="module")
def trained(volume, tmp_path_factory):
    """A config and a checkpoint of the tiny U-Net with random weights (any weights do)."""
    directory = tmp_path_factory.mktemp("trained")
    config_path = directory / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(experiment_dict(volume)))
    config = load_config(config_path)
    torch.manual_seed(0)
    model = build_model(config.model, 1, 3)
    checkpoint = save_checkpoint(directory, 5, {"model": model.state_dict(), "iteration": 5})
    return config_path, checkpoint, model.eval()


def whole_volume_prediction(model, raw_path: str, roi: Roi) -> np.ndarray:
    """One forward pass over ``roi`` grown by the context, zeros outside the input."""
    raw = open_ds(raw_path)
    grown = roi.grow((CONTEXT,) * 3, (CONTEXT,) * 3)
    data = np.zeros(grown.shape / VOXEL, dtype=np.float32)
    inside = grown.intersect(raw.roi)
    begin = (inside.begin - grown.begin) / VOXEL
    data[tuple(slice(b, b + s) for b, s in zip(begin, inside.shape / VOXEL, strict=True))] = (
        raw[inside] / 255.0
    )
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(data)[None, None]))[0].numpy()


def predict_args(trained, volume, output, *extra) -> list[str]:
    config_path, checkpoint, _ = trained
    return [
        "predict",
        str(config_path),
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(volume / "raw"),
        "--output",
        str(output),
        "--no-progress",
        *extra,
    ]


def record(output) -> dict:
    return dict(zarr.open_group(str(output), mode="r").attrs[RECORD_KEY])


CASES = {
    "1 worker": dict(workers=1),
    # `env` stands in for srun/bsub: the same path as cluster workers, without a scheduler.
    "2 workers started by a command, ROI at the input's corner": dict(
        workers=2, worker_command=["env"], roi="16,32,48:400,400,400"
    ),
    "4 workers": dict(workers=4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_blockwise_output_equals_one_whole_volume_pass(case, trained, volume, tmp_path):
    options = CASES[case]
    config_path, checkpoint, model = trained
    output = tmp_path / "out.zarr" / "pred"
    result = predict(
        config_path, checkpoint, str(volume / "raw"), str(output), progress=False, **options
    )

    roi = Roi((16, 32, 48), (400, 400, 400)) if "roi" in options else INPUT_ROI
    prediction = open_ds(level_path(output))
    assert prediction.roi == roi
    assert prediction.voxel_size == Coordinate(VOXEL, VOXEL, VOXEL)
    assert prediction.dtype == np.float32
    expected = whole_volume_prediction(model, str(volume / "raw"), roi)
    assert expected.std() > 0.01  # the comparison below means something
    np.testing.assert_allclose(prediction[:], expected, rtol=0, atol=1e-5)
    assert record(output)["complete"] is True
    assert result.blocks == result.blocks_predicted == (27 if "roi" in options else BLOCKS)


def _markers(output: Path) -> int:
    blocks = Path(f"{output}.done") / "blocks"
    return len(os.listdir(blocks)) if blocks.is_dir() else 0


# A chunk that only blocks far from the first ones read: c/1/1/1 holds voxels 32..63.
STALLING_CHUNK = Path("raw") / "c" / "1" / "1" / "1"


def _stalled_predict(trained, volume: Path, tmp_path: Path, output: Path):
    """Start ``voltrain predict`` (one worker) on a copy of the volume whose chunk
    STALLING_CHUNK is a FIFO, and return once the worker has opened it: the worker then
    waits inside that block's read, with every block read before it done. Returns the
    process, the FIFO's write end, the copy, and the chunk's real bytes."""
    container = tmp_path / "stalling.zarr"
    shutil.copytree(volume, container)
    chunk = container / STALLING_CHUNK
    content = chunk.read_bytes()
    chunk.unlink()
    os.mkfifo(chunk)
    args = predict_args(trained, container, output)
    process = subprocess.Popen(
        [sys.executable, "-m", "voltrain", *args],
        start_new_session=True,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while True:  # opening the write end succeeds once the reader has opened the FIFO
        try:
            writer = os.open(chunk, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as error:
            assert error.errno == errno.ENXIO, error
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the worker never read the stalling chunk"
        time.sleep(0.01)
    return process, writer, container, content


def test_a_killed_run_resumes_to_the_uninterrupted_result(trained, volume, tmp_path, capsys):
    output = tmp_path / "out.zarr" / "pred"
    process, writer, container, content = _stalled_predict(trained, volume, tmp_path, output)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and its worker processes
    process.communicate()
    os.close(writer)

    done_at_kill = _markers(output)
    assert 2 <= done_at_kill < BLOCKS, "the run must be killed midway"
    assert record(output)["complete"] is False
    (container / STALLING_CHUNK).unlink()
    (container / STALLING_CHUNK).write_bytes(content)

    args = predict_args(trained, container, output)
    assert main(args) == 0
    printed = capsys.readouterr().out
    before = int(re.search(r"blocks, (\d+) done before", printed).group(1))
    assert before == done_at_kill
    assert record(output)["complete"] is True
    expected = whole_volume_prediction(trained[2], str(container / "raw"), INPUT_ROI)
    np.testing.assert_allclose(open_ds(level_path(output))[:], expected, rtol=0, atol=1e-5)

    # A complete output is left alone: nothing is predicted again.
    assert main(args) == 0
    assert f"predicted 0 of {BLOCKS} blocks" in capsys.readouterr().out


def test_ctrl_c_ends_predict_in_one_line_with_the_details_in_the_logs(trained, volume, tmp_path):
    output = tmp_path / "out.zarr" / "pred"
    process, writer, _, _ = _stalled_predict(trained, volume, tmp_path, output)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's group
    os.close(writer)  # the stalled read returns (empty), so the worker can end
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert len(err.strip().splitlines()) == 1, err
    assert "interrupted; finished blocks are kept" in err
    assert f"{output}.done/logs" in err
    assert any(Path(f"{output}.done/logs").rglob("*"))


def _corrupt_first_chunk(volume: Path, tmp_path: Path) -> str:
    container = tmp_path / "corrupt.zarr"
    shutil.copytree(volume, container)
    (container / "raw" / "c" / "0" / "0" / "0").write_bytes(b"not a zstd frame")
    return str(container / "raw")


def test_blocks_that_keep_failing_are_listed_and_the_output_stays_incomplete(
    trained, volume, tmp_path, capsys
):
    raw = _corrupt_first_chunk(volume, tmp_path)
    output = tmp_path / "out.zarr" / "pred"
    args = predict_args(trained, volume, output, "--max-retries", "1")
    args[args.index("--input") + 1] = raw

    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    # The corrupt chunk holds voxels 0..31 of each axis: blocks reading it fail.
    chunk = Roi(INPUT_ROI.begin, (32 * VOXEL,) * 3)
    spec = plan_prediction(trained[0], trained[1], raw, str(output))
    failing = [
        roi
        for roi in block_write_rois(spec)
        if roi.grow((CONTEXT,) * 3, (CONTEXT,) * 3).intersects(chunk)
    ]
    assert f"{len(failing)} of {BLOCKS} blocks failed" in err
    assert "[16,32,48:160,160,160]" in err
    assert "Zstd" in err
    assert OutputStore(str(output)).missing_blocks(block_write_rois(spec)) == failing
    assert record(output)["complete"] is False
    # Each failing block was tried 1 + max_retries times; the worker logs hold every traceback.
    logs = "".join(path.read_text() for path in Path(f"{output}.done/logs").rglob("*.err"))
    assert logs.count("in serve_blocks") == 2 * len(failing)


def _coarse_input(volume: Path, tmp_path: Path) -> str:
    zarr.open_group(str(tmp_path / "coarse.zarr"), mode="w")
    prepare_ds(str(tmp_path / "coarse.zarr/raw"), (40,) * 3, voxel_size=(16,) * 3, dtype="u1")
    return str(tmp_path / "coarse.zarr/raw")


def _other_model_checkpoint(volume: Path, tmp_path: Path) -> str:
    model = torch.nn.Conv3d(1, 3, 3)
    return str(
        save_checkpoint(tmp_path / "other", 1, {"model": model.state_dict(), "iteration": 1})
    )


BAD_INPUTS = {
    "voxel size": (
        lambda args, v, t: args.__setitem__(args.index("--input") + 1, _coarse_input(v, t)),
        r"--input .*voxel_size \(16, 16, 16\) does not match the training voxel_size \(8, 8, 8\)",
    ),
    "roi outside": (
        lambda args, v, t: args.extend(["--roi", "0,0,0:800,800,800"]),
        r"--roi 0,0,0:800,800,800: .* is not inside the input",
    ),
    "roi malformed": (
        lambda args, v, t: args.extend(["--roi", "0,0,0-800,800,800"]),
        r"--roi 0,0,0-800,800,800: expected OFFSET:SHAPE",
    ),
    "roi off the voxel grid": (
        lambda args, v, t: args.extend(["--roi", "20,32,48:160,160,160"]),
        r"--roi .*multiples of the output voxel size \(8, 8, 8\)",
    ),
    "checkpoint of another model": (
        lambda args, v, t: args.__setitem__(
            args.index("--checkpoint") + 1, _other_model_checkpoint(v, t)
        ),
        r"checkpoint .* does not fit the configured model",
    ),
    "no workers": (lambda args, v, t: args.extend(["--workers", "0"]), r"--workers"),
    "no teacher in the checkpoint": (
        lambda args, v, t: args.extend(["--weights", "teacher"]),
        r"--weights teacher: checkpoint .* holds no teacher",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_output(case, trained, volume, tmp_path, capsys):
    mutate, expected = BAD_INPUTS[case]
    output = tmp_path / "out.zarr" / "pred"
    args = predict_args(trained, volume, output)
    mutate(args, volume, tmp_path)

    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(expected, err), err
    assert not (tmp_path / "out.zarr").exists()


def test_without_training_data_the_checkpoint_voxel_size_is_checked(volume, tmp_path, capsys):
    config = experiment_dict(tmp_path / "gone.zarr")
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(config))
    model = build_model(load_config(config_path).model, 1, 3)
    state = {"model": model.state_dict(), "iteration": 1, "voxel_size": [16, 16, 16]}
    checkpoint = save_checkpoint(tmp_path / "checkpoints", 1, state)
    output = tmp_path / "out.zarr" / "pred"

    args = predict_args((config_path, checkpoint, None), volume, output)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "does not match the training voxel_size (16, 16, 16) (from checkpoint" in err
    assert not output.exists()


def test_an_output_of_another_prediction_is_not_resumed(trained, volume, tmp_path, capsys):
    config_path, checkpoint, _ = trained
    output = tmp_path / "out.zarr" / "pred"
    other = plan_prediction(
        config_path, checkpoint, str(volume / "raw"), str(output), roi="16,32,48:160,160,160"
    )
    OutputStore(str(output)).create(other)

    assert main(predict_args(trained, volume, output)) == 2
    err = capsys.readouterr().err
    assert "holds a prediction with another roi_shape;" in err
    assert "--overwrite" in err
    assert record(output)["roi_shape"] == [160, 160, 160]


def test_larger_blocks_predict_the_same_and_segment_in_the_same_command(
    trained, volume, tmp_path, capsys
):
    from voltrain.segment import SegmentConfig, segment_array

    output = tmp_path / "out.zarr" / "pred"
    segmentation = tmp_path / "out.zarr" / "seg"
    args = predict_args(trained, volume, output, "--block-shape", "40", "40", "40")
    args += ["--segment", str(segmentation), "--thresholds", "0.3", "0.7", "--workers", "2"]
    assert main(args) == 0
    assert "predicted 8 of 8 blocks" in capsys.readouterr().out  # 320 nm blocks, not 160
    expected = whole_volume_prediction(trained[2], str(volume / "raw"), INPUT_ROI)
    predicted = open_ds(level_path(output))
    prediction = predicted[:]
    np.testing.assert_allclose(prediction, expected, rtol=0, atol=1e-5)

    config = SegmentConfig(block_shape=[64, 64, 64])  # experiment_dict's segment default
    in_memory = segment_array(
        prediction,
        [[-1, 0, 0], [0, -1, 0], [0, 0, -1]],
        [0.3, 0.7],
        None,
        config,
        predicted.voxel_size,
    )
    for threshold in (0.3, 0.7):
        result = open_ds(level_path(f"{segmentation}/threshold_{threshold}"))
        assert result.roi == INPUT_ROI and result.dtype == np.uint64
        np.testing.assert_array_equal(result[:], in_memory[threshold])


def test_a_block_shape_the_network_cannot_output_is_one_line(trained, volume, tmp_path, capsys):
    output = tmp_path / "out.zarr" / "pred"
    assert main(predict_args(trained, volume, output, "--block-shape", "41", "40", "40")) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1
        and "--block-shape 41 40 40" in err
        and "nearest larger block is 42 40 40" in err
    ), err
    assert not (tmp_path / "out.zarr").exists()


def test_a_semi_supervised_runs_teacher_predicts_with_its_own_weights(trained, volume, tmp_path):
    """``--weights teacher`` reads the mean teacher a semi-supervised checkpoint keeps under
    ``trainer.teacher``, not the student's weights beside it."""
    config_path, _, student = trained
    torch.manual_seed(1)
    teacher = build_model(load_config(config_path).model, 1, 3).eval()
    state = {
        "model": student.state_dict(),
        "trainer": {"teacher": teacher.state_dict()},
        "iteration": 5,
    }
    checkpoint = save_checkpoint(tmp_path / "checkpoints", 5, state)
    output = tmp_path / "out.zarr" / "pred"
    args = ["predict", str(config_path), "--checkpoint", str(checkpoint)]
    args += ["--input", str(volume / "raw"), "--output", str(output), "--no-progress"]
    assert main([*args, "--weights", "teacher", "--workers", "2"]) == 0

    prediction = open_ds(level_path(output))[:]
    expected = whole_volume_prediction(teacher, str(volume / "raw"), INPUT_ROI)
    np.testing.assert_allclose(prediction, expected, rtol=0, atol=1e-5)
    student_prediction = whole_volume_prediction(student, str(volume / "raw"), INPUT_ROI)
    assert np.abs(prediction - student_prediction).max() > 0.01
    # the student's prediction is another output: it does not resume the teacher's
    assert main([*args, "--weights", "student"]) == 2
