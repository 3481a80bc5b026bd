"""An OS file lock that keeps two runs out of one run directory (or prediction output).

The lock is ``fcntl.flock`` on a small file holding the holder's PID. The kernel drops it
when the holder dies, however it dies (SIGKILL included), so there is never a stale lock
to clean up: a lock file without a living holder is simply taken over.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from voltrain.errors import VoltrainError


class DirectoryBusyError(VoltrainError):
    """Another live process holds the lock of a run directory or prediction output."""


class DirectoryLock:
    """An exclusive lock on ``path`` (a lock file), taken without waiting.

    Use as a context manager, or ``acquire`` / ``release``. ``acquire`` raises
    ``DirectoryBusyError`` naming ``what`` and the holder's PID when another process holds
    it; taking it again in the same holder is a no-op.

    Args:
        path: the lock file (created if missing; its parent must exist or be creatable).
        what: how to name the locked thing in the error, e.g. ``--out runs/x``.
    """

    def __init__(self, path: str | Path, what: str):
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirectoryLock:
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_pid(fd)
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid = f"PID {holder}" if holder else "another process"
            raise DirectoryBusyError(
                f"{self.what}: in use by another voltrain run ({pid} holds {self.path}); "
                "wait for it to end or choose another path"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (the file stays: unlinking it would race with a new holder)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
