"""Resuming past a corrupt checkpoint: the newest one that loads, with a warning.

Checkpoints are written atomically, so a corrupt one comes from outside (a disk error, a
copy cut short, a stray edit). Refusing to resume would throw away every older, good
checkpoint; ``newest_readable_checkpoint`` falls back to the newest that loads and says
which ones it passed over.
"""

from __future__ import annotations

import logging
from pathlib import Path

from voltrain.errors import CheckpointError
from voltrain.run.checkpoint import list_checkpoints, load_checkpoint

logger = logging.getLogger(__name__)


def newest_readable_checkpoint(directory: Path) -> tuple[Path | None, dict | None]:
    """The newest checkpoint in ``directory`` that loads, and its state; (None, None) if
    there is none. Raises the newest one's ``CheckpointError`` if none loads."""
    checkpoints = list_checkpoints(directory)
    first_error: CheckpointError | None = None
    for _, path in reversed(checkpoints):
        try:
            state = load_checkpoint(path)
        except CheckpointError as error:
            first_error = first_error or error
            logger.warning("--resume: passing over %s", error)
            continue
        if first_error is not None:
            logger.warning("--resume: falling back to the newest readable checkpoint %s", path)
        return path, state
    if first_error is not None:
        raise first_error
    return None, None
