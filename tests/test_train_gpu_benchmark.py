"""benchmarks/train_gpu.py runs its CPU version and prints the table it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_gpu.py"


def test_cpu_version_prints_every_row(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1])}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--device", "cpu", "--size", "48",
         "--iterations", "2", "--warmup", "1", "--workers", "0", "--skip-start"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line[:34].strip(): line[34:].split() for line in result.stdout.splitlines()}
    assert float(rows["model only, batch on the device"][0]) > 0
    for title in ("0 loader workers", "0 workers, deform_on_device"):
        rate, busy, wait, first = rows[title]
        assert float(rate) > 0 and busy == "n/a"  # no NVML without a GPU
        assert 0 <= float(wait.rstrip("%")) <= 100
        assert float(first) > 0
    assert re.search(r"device cpu", result.stdout)
