"""Keeping the console to one line when a blockwise run fails or is interrupted.

daisy and its worker processes write warnings and whole tracebacks to standard error,
from Python and from native code, for every failed or interrupted block. ``stderr_into``
sends file descriptor 2 into a log file for the duration, while ``sys.stderr`` (the
progress bar) stays on the terminal; the command then ends with one line pointing there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def stderr_into(log: Path) -> Iterator[None]:
    """Redirect file descriptor 2 (and what child processes inherit) into ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    previous = sys.stderr
    with open(log, "ab") as file:
        os.dup2(file.fileno(), 2)
    sys.stderr = terminal
    try:
        yield
    finally:
        sys.stderr = previous
        terminal.close()
        os.dup2(saved, 2)
        os.close(saved)
