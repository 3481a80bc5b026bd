"""Faults and bad input: each ends in one line on stderr with the documented exit code, and
nothing already on disk is lost. See the README's "When things go wrong"."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import experiment_dict

from voltrain.cli import main
from voltrain.errors import CheckpointError
from voltrain.experiment import load_config
from voltrain.models.unet import build_model
from voltrain.trainers.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

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


@pytest.fixture
def checkpoint(volume, tmp_path) -> Path:
    """A checkpoint of the conftest model with random weights (any weights do)."""
    config = load_config(_write(tmp_path / "c.yaml", experiment_dict(volume)))
    torch.manual_seed(0)
    model = build_model(config.model, 1, 3)
    return save_checkpoint(tmp_path / "ckpt", 5, {"model": model.state_dict(), "iteration": 5})


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
    case, volume, write_config, tmp_path, capsys, monkeypatch
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
    assert "Zstd" in err
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


# --- 5 and 6. full disks and unwritable outputs ------------------------------------------------


@pytest.fixture
def mount_tmpfs(tmp_path):
    """Mounts a tmpfs of the given size (read-only if asked) at a new directory; skips the
    test where this process may not mount (not root)."""
    mounted = []

    def mount(name: str, size: str, read_only: bool = False) -> Path:
        point = tmp_path / name
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _fill(directory: Path, leave: int = 0) -> None:
    """Fill the file system of ``directory`` up to ``leave`` free bytes."""
    with open(directory / "filler", "wb") as filler:
        try:
            while True:
                filler.write(bytes(1 << 16))
                filler.flush()
        except OSError:
            pass
    if leave:
        size = (directory / "filler").stat().st_size
        os.truncate(directory / "filler", max(0, size - leave))


def test_a_full_disk_at_a_checkpoint_is_one_line_and_older_checkpoints_survive(
    volume, write_config, mount_tmpfs, capsys
):
    out = mount_tmpfs("disk", "4m") / "run"
    config = _config(write_config, volume, max_steps=2, checkpoint_interval=2)
    assert _train(config, out) == 0
    capsys.readouterr()
    # Room for the log rows, not for another checkpoint.
    _fill(out.parent, leave=8192)
    assert _train(config, out, "--resume", "--iterations", "4") == 1
    err = _one_line(capsys)
    assert "iteration_00000004.pt': no space left on device" in err
    assert load_checkpoint(out / "checkpoints" / "iteration_00000002.pt")["iteration"] == 2
    assert [i for i, _ in list_checkpoints(out / "checkpoints")] == [2]


def test_predict_stops_at_a_full_disk_with_one_line(
    volume, write_config, checkpoint, mount_tmpfs, capsys
):
    output = mount_tmpfs("disk", "1m") / "out.zarr" / "pred"
    args = ["predict", str(_config(write_config, volume)), "--checkpoint", str(checkpoint)]
    args += ["--input", str(volume / "raw"), "--output", str(output), "--no-progress"]
    assert main(args) == 1
    err = _one_line(capsys)
    assert f"'{output}': no space left on device" in err


OUTPUT_CASES = {
    "train --out is a file": ("train", "file", 2, "is a file, not a directory"),
    "train --out on a read-only file system": ("train", "ro", 2, "read-only file system"),
    "predict --output on a read-only file system": ("predict", "ro", 2, "read-only file system"),
}


@pytest.mark.parametrize("case", list(OUTPUT_CASES))
def test_an_unwritable_output_is_one_line_naming_it(
    case, volume, write_config, checkpoint, tmp_path, mount_tmpfs, capsys
):
    command, kind, code, expected = OUTPUT_CASES[case]
    if kind == "file":
        out = tmp_path / "taken"
        out.write_text("a file")
    else:
        out = mount_tmpfs("ro", "1m", read_only=True) / "run"
    config = str(_config(write_config, volume))
    if command == "train":
        assert _train(Path(config), out) == code
    else:
        args = ["predict", config, "--checkpoint", str(checkpoint), "--input"]
        args += [str(volume / "raw"), "--output", str(out / "o.zarr" / "p"), "--no-progress"]
        assert main(args) == code
    err = _one_line(capsys)
    assert expected in err and str(out) in err


# --- 8. SIGTERM -------------------------------------------------------------------------------


def _wait_for(condition, process: subprocess.Popen, what: str, limit: float = 300) -> None:
    """Wait (bounded) until ``condition()`` holds while ``process`` runs."""
    import time

    deadline = time.monotonic() + limit
    while not condition():
        assert process.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {limit} s"
        time.sleep(0.05)


def test_sigterm_checkpoints_the_current_iteration_and_exits_143(volume, write_config, tmp_path):
    out = tmp_path / "run"
    config = _config(write_config, volume, max_steps=10_000, checkpoint_interval=0)
    command = [sys.executable, "-m", "voltrain", "train", str(config), "--out", str(out)]
    process = subprocess.Popen(
        [*command, "--device", "cpu", "--no-progress"], stderr=subprocess.PIPE, text=True
    )
    metrics = out / "metrics.jsonl"
    _wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 2, process, "rows")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stopped by SIGTERM at iteration" in lines[0], err
    last = json.loads(metrics.read_text().splitlines()[-1])["iteration"]
    assert [i for i, _ in list_checkpoints(out / "checkpoints")] == [last]
    assert f"iteration_{last:08d}.pt" in lines[0]
