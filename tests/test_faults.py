"""Faults and bad input: each ends in one line on stderr with the documented exit code, and
nothing already on disk is lost. See the README's "When things go wrong"."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import experiment_dict
from voltrain.cli import main
from voltrain.errors import CheckpointError
from voltrain.experiment import load_config
from voltrain.models.unet import build_model
from voltrain.run.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

LOCK_HOLDER = """
import sys, time
from voltrain.faults.lock import DirectoryLock
DirectoryLock(sys.argv[1], "x").acquire()
print("held", flush=True)
time.sleep(120)
"""


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _config(write_config, container: Path, **trainer) -> Path:
    return write_config(experiment_dict(container, **trainer))


def _train(config: Path, out: Path, *extra: str) -> int:
    return main(
        ["train", str(config), "--out", str(out), "--device", "cpu", "--no-progress", *extra]
    )


def _make_checkpoint(volume: Path, tmp_path: Path) -> Path:
    """A checkpoint of the conftest model with random weights (any weights do)."""
    config = load_config(_write(tmp_path / "c.yaml", experiment_dict(volume)))
    torch.manual_seed(0)
    model = build_model(config.model, 1, 3)
    return save_checkpoint(tmp_path / "ckpt", 5, {"model": model.state_dict(), "iteration": 5})


@pytest.fixture
def checkpoint(volume, tmp_path) -> Path:
    return _make_checkpoint(volume, tmp_path)


def _write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def lock_holder():
    """Starts a process that holds the lock file given, and SIGKILLs it at the end."""
    processes = []

    def hold(path: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(path)], stdout=subprocess.PIPE, text=True
        )
        processes.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in processes:
        process.kill()
        process.wait()


# --- 1. one run per directory -------------------------------------------------------------


def test_a_second_train_on_a_locked_run_directory_names_the_holder_and_writes_nothing(
    volume, write_config, tmp_path, capsys, lock_holder
):
    out = tmp_path / "run"
    out.mkdir()
    holder = lock_holder(out / ".voltrain.lock")
    assert _train(_config(write_config, volume), out) == 2
    err = _one_line(capsys)
    assert f"--out {out}" in err and f"PID {holder.pid}" in err
    assert sorted(p.name for p in out.iterdir()) == [".voltrain.lock"]

    # A SIGKILLed holder leaves no stale lock: the next run takes it and trains.
    holder.kill()
    holder.wait()
    assert _train(_config(write_config, volume, max_steps=1), out) == 0
    assert [i for i, _ in list_checkpoints(out / "checkpoints")] == [1]


def test_a_second_predict_on_a_locked_output_names_the_holder(
    volume, write_config, checkpoint, tmp_path, capsys, lock_holder
):
    output = tmp_path / "out.zarr" / "pred"
    holder = lock_holder(Path(f"{output}.lock"))
    args = ["predict", str(_config(write_config, volume)), "--checkpoint", str(checkpoint)]
    args += ["--input", str(volume / "raw"), "--output", str(output), "--no-progress"]
    assert main(args) == 2
    err = _one_line(capsys)
    assert f"--output {output}" in err and f"PID {holder.pid}" in err
    assert not output.exists()


# --- 2 and 6. torchrun environment ----------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


TORCHRUN_CASES = {
    "a missing peer": (
        {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "port"},
        1,
        ["rank 0 of 2", "127.0.0.1:port", "trainer.peer_timeout=1 s"],
    ),
    "WORLD_SIZE alone": ({"WORLD_SIZE": "2"}, 2, ["RANK, MASTER_ADDR, MASTER_PORT are not"]),
    "no MASTER_ADDR": (
        {"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "port"},
        2,
        ["MASTER_ADDR is not"],
    ),
}


@pytest.mark.parametrize("case", list(TORCHRUN_CASES))
def test_a_broken_torchrun_environment_ends_in_one_line(
    case, volume, write_config, tmp_path, capsys, caplog, monkeypatch
):
    env, code, expected = TORCHRUN_CASES[case]
    port = str(_free_port())
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("port", port))
    config = _config(write_config, volume, peer_timeout=1)
    assert _train(config, tmp_path / "run") == code
    err = _one_line(capsys)
    for text in expected:
        assert text.replace("port", port) in err
    assert not (tmp_path / "run").exists()
    if code == 1:  # while waiting, it said what for
        assert f"rank 0 of 2 waiting for the other 1 rank(s) at 127.0.0.1:{port}" in caplog.text


# --- 3. unreadable chunks ---------------------------------------------------------------------


def _corrupt(volume: Path, tmp_path: Path, chunks: list[str]) -> Path:
    container = tmp_path / "corrupt.zarr"
    shutil.copytree(volume, container)
    for chunk in chunks:
        (container / "raw" / "c" / chunk).write_bytes(b"not a zstd frame")
    return container


ALL_CHUNKS = [f"{z}/{y}/{x}" for z in (0, 1) for y in (0, 1) for x in (0, 1)]


def test_a_corrupt_chunk_is_named_in_one_line_before_the_run_directory_is_written(
    volume, write_config, tmp_path, capsys
):
    container = _corrupt(volume, tmp_path, ALL_CHUNKS)
    out = tmp_path / "run"
    assert _train(_config(write_config, container), out) == 2
    err = _one_line(capsys)
    assert f"array '{container / 'raw'}': chunk 'c/" in err
    assert re.search(r"cannot be read: \S", err), err  # the codec's own reason follows
    assert not out.exists()


def test_on_data_error_skip_redraws_counts_and_warns_once_per_chunk(
    volume, write_config, tmp_path, capsys, caplog
):
    container = _corrupt(volume, tmp_path, ["1/1/1"])
    out = tmp_path / "run"
    config = _config(write_config, container, on_data_error="skip", max_steps=3)
    assert _train(config, out) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["data_errors"] > 0
    warnings = [r for r in caplog.records if "chunk 'c/1/1/1'" in r.getMessage()]
    assert len(warnings) == 1


def test_on_data_error_skip_with_only_bad_chunks_ends_with_a_clear_error(
    volume, write_config, tmp_path, capsys
):
    container = _corrupt(volume, tmp_path, ALL_CHUNKS)
    config = _config(write_config, container, on_data_error="skip", max_sampling_attempts=3)
    assert _train(config, tmp_path / "run") == 2
    err = _one_line(capsys)
    assert "all 3 draws of a sample" in err and "chunk 'c/" in err


# --- 9. smaller mismatches --------------------------------------------------------------------


def test_min_masked_failing_after_augmentation_fails_before_anything_is_written(
    volume, write_config, tmp_path, capsys
):
    from funlib.persistence import open_ds

    # Masked: one cube of the output's size. Unaugmented, one centre meets min_masked 1.0;
    # deformed, its faces leave the output region and no draw meets it.
    container = tmp_path / "cube.zarr"
    shutil.copytree(volume, container)
    mask = open_ds(str(container / "mask"), mode="r+")
    data = mask[:] * 0
    data[22:42, 22:42, 22:42] = 1
    mask[mask.roi] = data
    out = tmp_path / "run"
    raw = experiment_dict(container, min_masked=1.0, max_sampling_attempts=5)
    elastic = {"control_point_spacing": [40] * 3, "jitter_sigma": [16] * 3, "rotate": False}
    raw["trainer"]["augments"] = [{"type": "elastic", **elastic}]
    assert _train(write_config(raw), out) == 2
    assert "reached min_masked=1 on its output region after augmentation" in _one_line(capsys)
    assert not out.exists()


def test_nan_in_float_raw_names_the_dataset_and_the_sample_roi(
    volume, write_config, tmp_path, capsys
):
    import numpy as np
    from funlib.persistence import open_ds, prepare_ds

    source = open_ds(str(volume / "raw"))
    raw = source[:].astype(np.float32) / 255
    raw[30:34, 30:34, 30:34] = np.nan
    container = tmp_path / "nan.zarr"
    shutil.copytree(volume, container)
    shutil.rmtree(container / "raw")
    array = prepare_ds(
        str(container / "raw"),
        shape=raw.shape,
        offset=source.roi.offset,
        voxel_size=source.voxel_size,
        dtype=np.float32,
    )
    array[:] = raw
    config = _config(write_config, container, normalize_factor=1.0, min_masked=0.0, max_steps=20)
    assert _train(config, tmp_path / "run") == 2
    err = _one_line(capsys)
    assert "data.train 'cells'" in err and "NaN" in err and "ROI" in err


def test_resume_of_a_missing_directory_warns(volume, write_config, tmp_path, caplog):
    out = tmp_path / "never"
    assert _train(_config(write_config, volume, max_steps=1), out, "--resume") == 0
    assert f"--resume: {out} does not exist" in caplog.text


def test_resume_falls_back_past_a_corrupt_latest_checkpoint(volume, write_config, tmp_path, caplog):
    out = tmp_path / "run"
    config = _config(write_config, volume, max_steps=4, checkpoint_interval=2)
    assert _train(config, out) == 0
    (out / "checkpoints" / "iteration_00000004.pt").write_bytes(b"\0" * 100)
    assert _train(config, out, "--resume", "--iterations", "6") == 0
    assert "falling back to the newest readable checkpoint" in caplog.text
    assert "iteration_00000002.pt" in caplog.text
    assert load_checkpoint(out / "checkpoints" / "iteration_00000006.pt")["iteration"] == 6


def test_a_random_bytes_checkpoint_is_called_corrupt_not_unsafe(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a PyTorch zip archive") as raised:
        load_checkpoint(path)
    assert "run code" not in str(raised.value)


def test_a_missing_config_file_is_reported_before_torch_is_imported(tmp_path):
    script = (
        "import sys; from voltrain.cli import main; "
        f"code = main(['train', '{tmp_path / 'missing.yaml'}', '--out', '{tmp_path / 'o'}']); "
        "print(code, 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["2", "False"]
    assert "missing.yaml: config file not found" in done.stderr
