"""Joining a torchrun job's ranks with a bounded, announced wait.

torch's own rendezvous waits up to the process group's timeout (30 minutes by default) in
silence when a rank never comes. Here the wait for the other ranks has its own bound
(``trainer.peer_timeout``), a line says after a few seconds what is awaited (rank, world
size, address), and a rank that does not come ends the run with one line.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta

from voltrain.errors import ConfigError, VoltrainError
from voltrain.faults import first_line

logger = logging.getLogger(__name__)

# What torchrun sets for each rank; all are needed to join a job by hand.
REQUIRED_ENV = ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT")
# Seconds of silent waiting before saying what is awaited (at most half the bound).
ANNOUNCE_AFTER = 5.0


class PeersMissingError(VoltrainError):
    """The other ranks of a torchrun job did not join within ``trainer.peer_timeout``."""

    exit_code = 1


def check_environment() -> bool:
    """Whether the environment describes a rank of a multi-process job.

    ``WORLD_SIZE`` above 1 with any of the other variables missing is a ``ConfigError``
    naming them; ``WORLD_SIZE=1`` alone only warns (one process trains).
    """
    if "WORLD_SIZE" not in os.environ:
        return False
    text = os.environ["WORLD_SIZE"]
    try:
        size = int(text)
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={text!r}: must be a whole number of processes") from None
    missing = [name for name in REQUIRED_ENV if name not in os.environ]
    if not missing:
        return True
    if size > 1:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(
            f"WORLD_SIZE={size} is set but {', '.join(missing)} {verb} "
            "not: start every rank with torchrun (which sets them all), or unset WORLD_SIZE "
            "to train in one process"
        )
    logger.warning("WORLD_SIZE=1 without %s: training in one process", ", ".join(missing))
    return False


def join_process_group(backend: str, peer_timeout: float, collective_timeout: float) -> None:
    """Join the job's default process group. The other ranks must come within
    ``peer_timeout`` seconds (else ``PeersMissingError``); afterwards every collective
    waits up to ``collective_timeout``."""
    import torch.distributed as dist
    from torch.distributed.rendezvous import _create_c10d_store

    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    waiting = f"rank {rank} of {size} waiting for the other {size - 1} rank(s) at {address}"
    announcer = threading.Timer(
        min(ANNOUNCE_AFTER, peer_timeout / 2),
        logger.warning,
        ("%s (up to %g s, trainer.peer_timeout)", waiting, peer_timeout),
    )
    announcer.daemon = True
    announcer.start()
    try:
        # torch's own env:// rendezvous would wait the collective timeout (30 min)
        store = _create_c10d_store(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            rank,
            size,
            timedelta(seconds=peer_timeout),
        )
        dist.init_process_group(
            backend,
            store=store,
            rank=rank,
            world_size=size,
            timeout=timedelta(seconds=collective_timeout),
        )
    except (RuntimeError, TimeoutError, OSError, ValueError) as error:
        raise PeersMissingError(
            f"{waiting}: not all joined within trainer.peer_timeout={peer_timeout:g} s "
            f"({first_line(error)}); start every rank (torchrun --nproc_per_node) with the "
            "same MASTER_ADDR and MASTER_PORT"
        ) from None
    finally:
        announcer.cancel()
    store.set_timeout(timedelta(seconds=collective_timeout))
