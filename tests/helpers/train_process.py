"""``voltrain train`` in a subprocess: run it, or kill it mid-run, for resume tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def train_command(config: Path, out: Path, *extra: str) -> list[str]:
    """The command line of ``voltrain train CONFIG --out OUT`` with ``extra`` arguments."""
    return [sys.executable, "-m", "voltrain", "train", str(config), "--out", str(out), *extra]


def train_env() -> dict:
    """The environment of a test's training process: one thread, unbuffered output."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_training(config: Path, out: Path, *extra: str) -> None:
    """Train to the end; the process must succeed."""
    command = train_command(config, out, "--no-progress", *extra)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=train_env())
    assert result.returncode == 0, result.stderr[-3000:]


def start_and_kill(config: Path, out: Path) -> int:
    """Start training and SIGKILL it once it has written its iteration-3 checkpoint; returns
    the number of metric rows written by then."""
    command = train_command(config, out, "--no-progress")
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=train_env()
    )
    first = out / "checkpoints" / "iteration_00000003.pt"
    deadline = time.monotonic() + 300
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "training ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    return len((out / "metrics.jsonl").read_text().splitlines())


def metric_rows(out: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
