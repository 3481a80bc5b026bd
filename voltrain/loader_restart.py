"""A training-batch loader that survives the death of its worker processes.

A loader worker can die under a training run: the kernel's OOM killer, a segfault in a
codec, an operator's ``kill``. Batches derive from (seed, iteration, sample index) alone
(``voltrain.loader``), so a fresh loader started at the current iteration yields exactly
the batches the dead one would have: ``RestartingLoader`` does that, logs it, and gives up
with one line (``LoaderFailedError``) after ``max_restarts`` restarts.

torch notices a dead worker through a SIGCHLD handler that raises wherever the main thread
happens to be (in the middle of an optimizer step, say). Here the handler only notes the
death unless the main thread is waiting for a batch; the next wait raises it, so a restart
always happens between two batches.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from torch.utils.data import DataLoader

from voltrain.errors import VoltrainError

logger = logging.getLogger(__name__)


class LoaderFailedError(VoltrainError):
    """Loader workers kept dying; the run stopped after ``trainer.loader_restarts``."""

    exit_code = 1


class WorkerDiedError(RuntimeError):
    """A loader worker process died (killed or crashed)."""


def _is_worker_death(error: Exception) -> bool:
    """Whether ``error`` says a worker died, rather than being a worker's own error (which
    torch re-raises in this process with "in DataLoader worker process" in its text)."""
    text = str(error)
    if "in DataLoader worker process" in text:
        return False
    if isinstance(error, ConnectionError | EOFError):
        # a worker killed while handing a batch over breaks the handover itself
        return True
    return "exited unexpectedly" in text or "killed by signal" in text


class RestartingLoader:
    """Batches of iterations ``start + 1, start + 2, ...`` from loaders made by ``make``.

    Args:
        make: the loader of the batches from iteration ``n + 1`` on, given ``n``.
        max_restarts: restarts allowed over the life of this object.
    """

    def __init__(self, make: Callable[[int], DataLoader], max_restarts: int):
        self.make = make
        self.max_restarts = max_restarts
        self.restarts = 0
        self.iteration: int | None = None  # the iteration whose batch comes next, minus 1
        self._iterator = None
        self._waiting = False
        self._death: str | None = None
        self._previous_handler = None

    def next_batch(self, iteration: int) -> dict:
        """The batch of iteration ``iteration + 1``."""
        if self._iterator is None or self.iteration != iteration:
            self._start(iteration)
        while True:
            try:
                batch = self._next()
            except WorkerDiedError as error:
                self._restart(str(error))
                continue
            except (RuntimeError, ConnectionError, EOFError) as error:
                if not _is_worker_death(error):
                    raise
                self._restart(f"{type(error).__name__}: {error}".strip().splitlines()[0])
                continue
            self.iteration += 1
            return batch

    def worker_pids(self) -> list[int]:
        """The PIDs of the current loader's worker processes (none without workers)."""
        workers = getattr(self._iterator, "_workers", None) or []
        return [worker.pid for worker in workers]

    def close(self) -> None:
        """Stop the workers and put back the SIGCHLD handler found at the start."""
        shutdown = getattr(self._iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._iterator = None
        self.iteration = None
        self._death = None
        if self._previous_handler is not None:
            signal.signal(signal.SIGCHLD, self._previous_handler)
            self._previous_handler = None

    def _start(self, iteration: int) -> None:
        self.close()
        self._iterator = iter(self.make(iteration))
        self.iteration = iteration
        self._take_over_sigchld()

    def _restart(self, reason: str) -> None:
        iteration = self.iteration
        self.restarts += 1
        if self.restarts > self.max_restarts:
            self.close()
            raise LoaderFailedError(
                f"a data loader worker died at iteration {iteration} ({reason}), restart "
                f"{self.restarts} of trainer.loader_restarts={self.max_restarts}: gave up; "
                "checkpoints written so far are kept, --resume continues"
            )
        logger.warning(
            "a data loader worker died (%s); restarting the loader at iteration %d "
            "(restart %d of %d, trainer.loader_restarts)",
            reason,
            iteration,
            self.restarts,
            self.max_restarts,
        )
        self._start(iteration)

    def _next(self) -> dict:
        if self._death is not None:
            death, self._death = self._death, None
            raise WorkerDiedError(death)
        self._waiting = True
        try:
            return next(self._iterator)
        finally:
            self._waiting = False

    def _take_over_sigchld(self) -> None:
        """Replace torch's SIGCHLD handler (set when the workers started) with one that
        raises only while this loader waits for a batch."""
        if not self.worker_pids() or threading.current_thread() is not threading.main_thread():
            return
        self._previous_handler = signal.getsignal(signal.SIGCHLD)
        signal.signal(signal.SIGCHLD, self._on_sigchld)

    def _on_sigchld(self, signum, frame) -> None:
        from torch._C import _error_if_any_worker_fails

        try:
            _error_if_any_worker_fails()
        except RuntimeError as error:
            self._death = str(error).strip().splitlines()[0]
            if self._waiting:
                death, self._death = self._death, None
                raise WorkerDiedError(death) from None
