"""Stopping on SIGTERM with a checkpoint: what a cluster scheduler sends before it kills.

``StopOnSignal`` is a callback: its signal handler only notes the signal, and the next
step's end asks the trainer to stop (with several ranks, all stop after the same
iteration, see ``Trainer._agree_to_stop``). The run then writes the checkpoint of the
iteration it reached, and ``TerminatedError`` ends the command with exit code 143
(128 + SIGTERM), as the shell reports a process killed by SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading

from voltrain.callbacks import Callback
from voltrain.errors import VoltrainError

logger = logging.getLogger(__name__)


class TerminatedError(VoltrainError):
    """Training stopped on SIGTERM after saving a checkpoint; exit code 143."""

    exit_code = 128 + signal.SIGTERM


class StopOnSignal(Callback):
    """Asks training to stop after the current step once ``signum`` arrives.

    Use as a context manager around training: entering installs the handler (main thread
    only), leaving puts back the previous one.
    """

    def __init__(self, signum: int = signal.SIGTERM):
        self.signum = signum
        self.received = False
        self._previous = None

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if not self.received:
            logger.info("%s received: stopping after this step", signal.Signals(signum).name)
        self.received = True

    def on_step_end(self, stats) -> bool:
        return self.received
