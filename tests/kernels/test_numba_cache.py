"""The kernels' numba cache notices an edit to a helper that another kernel file inlines."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from voltrain.kernels import counter_rng, resample_kernels
from voltrain.kernels.numba_cache import KERNELS_DIR, KernelCacheLocator, sources_stamp

# Defines a locator for the temporary kernels directory, then calls its cached kernel.
RUN_KERNEL = """
import sys
from pathlib import Path
from voltrain.kernels.numba_cache import KernelCacheLocator, install
directory = Path(sys.argv[1]).resolve()
install(type("Here", (KernelCacheLocator,), {"directory": directory}))
sys.path.insert(0, str(directory))
import kernel
print(kernel.twice_helper(), kernel.twice_helper._cache._impl.locator.directory)
"""


def _write_kernels(directory: Path, helper_value: int) -> None:
    (directory / "helper.py").write_text(
        textwrap.dedent(
            f"""
            from numba import njit

            @njit(cache=True)
            def helper():
                return {helper_value}
            """
        )
    )
    (directory / "kernel.py").write_text(
        textwrap.dedent(
            """
            from numba import njit
            from helper import helper

            @njit(cache=True)
            def twice_helper():
                return 2 * helper()
            """
        )
    )


def _run(directory: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", RUN_KERNEL, str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return result.stdout.split()[0]


def test_editing_an_inlined_helper_recompiles_the_kernel_that_calls_it(tmp_path):
    _write_kernels(tmp_path, helper_value=1)
    assert _run(tmp_path) == "2"
    assert list((tmp_path / "__pycache__").glob("kernel.twice_helper-*.nbi")), "cached"
    _write_kernels(tmp_path, helper_value=5)  # kernel.py itself is unchanged
    assert _run(tmp_path) == "10"


def test_the_stamp_covers_every_numba_file_and_ignores_the_others(tmp_path):
    _write_kernels(tmp_path, helper_value=1)
    (tmp_path / "plain.py").write_text("VALUE = 1\n")
    before = sources_stamp(tmp_path)
    (tmp_path / "plain.py").write_text("VALUE = 2\n")
    assert sources_stamp(tmp_path) == before
    _write_kernels(tmp_path, helper_value=2)
    assert sources_stamp(tmp_path) != before


def test_voltrain_kernels_are_cached_with_the_package_stamp():
    for kernel in (counter_rng.add_noise_row, resample_kernels.resample_linear):
        locator = kernel._cache._impl.locator
        assert isinstance(locator, KernelCacheLocator)
        assert locator.get_source_stamp() == sources_stamp(KERNELS_DIR)
