"""Faults of the operating system: a full disk, unwritable outputs, SIGTERM. Each ends in
one line with the documented exit code, and what is on disk survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_faults import _config, _make_checkpoint, _one_line, _train

from voltrain.cli import main
from voltrain.run.checkpoint import list_checkpoints, load_checkpoint

# --- 5 and 6. full disks and unwritable outputs ------------------------------------------------


@pytest.fixture
def checkpoint(volume, tmp_path) -> Path:
    return _make_checkpoint(volume, tmp_path)


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
