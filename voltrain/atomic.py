"""Files that never exist half-written: write a temporary file beside, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], durable: bool) -> Path:
    """Call ``write(file)`` on a temporary file in ``path``'s directory, then rename it to
    ``path``. A process killed meanwhile leaves only the temporary file (``.tmp-*``).

    With ``durable``, the file and then the directory are fsynced, so the rename survives
    a power loss too (checkpoints); without, a crash of the machine may lose it (markers
    that a rerun recreates).
    """
    final = Path(path)
    directory = final.parent
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=final.suffix)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, final)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        if error.filename is None:  # a failed flush or fsync: name the file it was for
            raise OSError(error.errno, error.strerror, str(final)) from None
        raise
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if durable:
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
    return final
