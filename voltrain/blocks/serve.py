"""A blockwise worker's loop: take blocks from the daisy server until none are left.

A block whose processing raises is marked failed (the server retries it, maybe on another
worker) and its root cause recorded; the worker goes on with the next block instead of
paying its setup (a model, a graph) again.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

from funlib.geometry import Roi

from voltrain.blocks.record import BlockRecord


def serve_blocks(client, record: BlockRecord, process: Callable[[Roi], None]) -> None:
    """Process blocks from ``client`` (a ``daisy.Client``) with ``process(write_roi)``.

    ``process`` writes the block's output and marks it done in ``record``.
    """
    import daisy.v2 as daisy

    while True:
        with client.acquire_block() as block:
            if block is None:
                return
            try:
                process(block.write_roi)
            except Exception as error:
                _report_failure(record, block, error)
                block.status = daisy.BlockStatus.FAILED


def _report_failure(record: BlockRecord, block, error: Exception) -> None:
    traceback.print_exc(file=sys.stderr)
    try:
        record.record_failure(block.write_roi, root_cause(error))
    except OSError as record_error:  # the block still fails; only its message is lost
        print(f"could not record the failure: {record_error}", file=sys.stderr)


def root_cause(error: BaseException) -> str:
    """One line naming the innermost error, e.g. a zarr codec error inside gunpowder's
    ``PipelineRequestError`` (which keeps it only as traceback text)."""
    lines = "".join(getattr(error, "original_traceback", None) or []).strip().splitlines()
    if lines:
        return lines[-1].strip()
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[-1] if message else ''}"
