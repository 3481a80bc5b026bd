"""OS errors as one line naming the path: a full disk, a read-only or misplaced output.

Writes fail for reasons outside voltrain: the disk fills, the file system is read-only,
``--out`` names a file. Python's ``OSError`` knows the path only when the failing call had
one (``open``), not for a ``write`` or ``flush``; ``where`` names the output then.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from voltrain.errors import VoltrainError


class DiskFullError(VoltrainError):
    """A write failed for lack of space (or of the file-size limit); exit code 1."""

    exit_code = 1


class OutputPathError(VoltrainError):
    """An output path cannot be written: read-only, not a directory, not permitted."""


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Errors of writing an output; others (a dropped connection to a data store) pass as they are.
_WRITE_ERRORS = _FULL | {
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
}


def describe_os_error(error: OSError, where: str | Path) -> VoltrainError:
    """The one-line voltrain error for ``error``, raised while writing ``where``."""
    path = error.filename if error.filename is not None else where
    reason = error.strerror or str(error)
    if error.errno in _FULL:
        what = "no space left on device" if error.errno == errno.ENOSPC else reason.lower()
        return DiskFullError(
            f"'{path}': {what}; files written before are intact, free space and rerun "
            "(train: --resume)"
        )
    return OutputPathError(f"'{path}': {reason.lower()} (errno {error.errno})")


@contextmanager
def reporting_os_errors(where: str | Path) -> Iterator[None]:
    """Re-raise an ``OSError`` of writing (full disk, read-only, not permitted) in the block
    as ``describe_os_error``'s one-line error."""
    try:
        yield
    except OSError as error:
        if error.errno not in _WRITE_ERRORS:
            raise
        raise describe_os_error(error, where) from None


def check_output_directory(path: str | Path, option: str) -> None:
    """Raise ``OutputPathError`` if ``path`` cannot become a writable directory: it is a
    file, or its nearest existing ancestor is read-only. Writes nothing."""
    import os

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path}: is a file, not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{option} {path}: '{existing}' is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        readonly = _is_read_only(existing)
        why = "is on a read-only file system" if readonly else "is not writable"
        raise OutputPathError(f"{option} {path}: '{existing}' {why}")


def _is_read_only(path: Path) -> bool:
    import os

    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


class RecordingWriter:
    """A binary file wrapper that keeps the ``OSError`` of a failed write.

    ``torch.save`` turns a failed write into ``RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos``, losing the cause; the writer keeps it.

    Args:
        file: the open binary file.
        path: its name, for the error.
    """

    def __init__(self, file, path: str | Path):
        self.file = file
        self.path = str(path)
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = OSError(error.errno, error.strerror, self.path)
            raise

    def flush(self) -> None:
        self.file.flush()
