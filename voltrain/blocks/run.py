"""Run one resumable daisy task and turn blocks that kept failing into one error.

daisy runs ``workers`` worker processes on 127.0.0.1; each block may be retried
``max_retries`` times and is abandoned after ``block_timeout`` seconds. Blocks already
marked done in the stage's ``BlockRecord`` are skipped (daisy ``check_function``), so a
rerun of the same command resumes. Worker logs go to the record's ``logs`` directory, and
so does everything daisy and the workers write to standard error while the task runs
(``driver.log``): the command itself ends in one line, also on Ctrl-C and on a full disk.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass

from funlib.geometry import Roi

from voltrain.blocks.record import BlockIsDone, BlockRecord
from voltrain.errors import VoltrainError
from voltrain.faults import first_line
from voltrain.faults.console import stderr_into
from voltrain.faults.os_errors import DiskFullError, describe_os_error

MAX_LISTED_BLOCKS = 5
DISK_FULL_TEXT = "No space left on device"
FULL_HINT = "finished blocks are kept; free space and rerun the command to resume"


class BlocksFailedError(VoltrainError):
    """Some blocks failed on every attempt; the output stays marked incomplete."""

    exit_code = 1


class BlocksInterruptedError(VoltrainError):
    """Ctrl-C stopped a blockwise run; exit code 130, as for SIGINT."""

    exit_code = 130


@dataclass(frozen=True)
class BlockRunOptions:
    """How a blockwise run is carried out (the ``--workers`` ... command-line options)."""

    workers: int = 1
    block_timeout: float = 600.0
    max_retries: int = 2
    host: str = "127.0.0.1"
    progress: bool = True

    def check(self) -> None:
        """Raise a one-line ``VoltrainError`` naming a bad option."""
        if self.workers < 1:
            raise VoltrainError(f"--workers must be at least 1, got {self.workers}")
        if self.block_timeout <= 0:
            raise VoltrainError(f"--block-timeout must be positive, got {self.block_timeout}")
        if self.max_retries < 0:
            raise VoltrainError(f"--max-retries must be 0 or more, got {self.max_retries}")


def run_task(
    task_id: str,
    record: BlockRecord,
    total_roi: Roi,
    read_roi: Roi,
    write_roi: Roi,
    process_function,
    options: BlockRunOptions,
) -> str | None:
    """Run the daisy task; return the reason if daisy abandoned it (workers kept dying).

    ``read_roi`` and ``write_roi`` are one block's, relative to the block's origin;
    ``process_function`` is daisy's worker function (picklable, ``f(*, context)``).
    """
    import daisy.v2 as daisy
    from daisy import logging as daisy_logging

    with warnings.catch_warnings():
        # daisy warns that check_function runs per block on the server; here it is one
        # stat() of a marker file, and the markers are the record that survives kills.
        warnings.filterwarnings("ignore", message=r"Task\(check_function", category=UserWarning)
        task = daisy.Task(
            task_id=task_id,
            total_roi=total_roi,
            read_roi=read_roi,
            write_roi=write_roi,
            process_function=process_function,
            check_function=BlockIsDone(record.directory),
            read_write_conflict=False,
            fit="overhang",
            max_workers=options.workers,
            max_retries=options.max_retries,
            timeout=options.block_timeout,
            tracking_path=False,
        )
    previous_log_dir = daisy_logging.get_log_basedir()
    daisy_logging.set_log_basedir(record.logs_dir)
    try:
        with stderr_into(record.logs_dir / "driver.log"):
            daisy.run_blockwise(
                task,
                progress=options.progress,
                host=options.host,
                summary=False,
                return_states=True,
            )
    except RuntimeError as error:  # daisy abandons a task whose workers keep crashing
        reason = str(error).strip().splitlines()[0]
        # The first line may end by introducing a traceback that the worker logs hold.
        return re.sub(r"\s*[^.;]*:$", "", reason)
    except BaseException as error:
        # daisy's Rust scheduler panics when it cannot print (its log on a full disk); the
        # blocks it left unfinished are then reported like any others.
        if type(error).__name__ != "PanicException":
            raise
        return f"daisy stopped: {first_line(error)}"
    finally:
        daisy_logging.set_log_basedir(previous_log_dir)
    return None


def failure_message(
    record: BlockRecord, output: str, missing: list[Roi], total: int, abandoned: str | None
) -> str:
    """One line: how many blocks failed, which, the last error, and where the logs are."""
    listed = " ".join(f"[{roi_text(roi)}]" for roi in missing[:MAX_LISTED_BLOCKS])
    more = len(missing) - MAX_LISTED_BLOCKS
    if more > 0:
        listed += f" and {more} more"
    errors = [error for error in (record.failure(roi) for roi in missing) if error]
    cause = f"; last error: {errors[0]}" if errors else ""
    if abandoned:
        cause += f"; daisy gave up: {abandoned}"
        if "timeout" in abandoned:
            cause += " (raise --block-timeout if blocks need longer)"
    return (
        f"{len(missing)} of {total} blocks failed (output ROIs {listed}){cause}; "
        f"'{output}' stays marked incomplete, rerun the command to retry them "
        f"(worker logs in {record.logs_dir})"
    )


def roi_text(roi: Roi) -> str:
    """A ROI as OFFSET:SHAPE in world units, the form ``--roi`` takes."""
    return f"{','.join(map(str, roi.offset))}:{','.join(map(str, roi.shape))}"


def run_stage(
    task_id: str,
    record: BlockRecord,
    output: str,
    total_roi: Roi,
    block_rois: tuple[Roi, Roi],
    write_rois: list[Roi],
    process_function,
    options: BlockRunOptions,
) -> None:
    """``run_task``, then raise ``BlocksFailedError`` unless every block of ``write_rois``
    is marked done. ``block_rois`` is one block's (read ROI, write ROI)."""
    read_roi, write_roi = block_rois
    try:
        abandoned = run_task(
            task_id, record, total_roi, read_roi, write_roi, process_function, options
        )
    except KeyboardInterrupt:
        raise BlocksInterruptedError(
            f"--output {output}: interrupted; finished blocks are kept and a rerun of the "
            f"command resumes (details in {record.logs_dir})"
        ) from None
    missing = record.missing_blocks(write_rois)
    if missing:
        raise_if_disk_full(record, output, missing)
        raise BlocksFailedError(
            failure_message(record, output, missing, len(write_rois), abandoned)
        )


def raise_if_disk_full(record: BlockRecord, output: str, missing: list[Roi]) -> None:
    """Raise ``DiskFullError`` if blocks failed because the output's disk is full: a block
    recorded it, or not even a small file can be written there now."""
    recorded = [record.failure(roi) or "" for roi in missing]
    if any(DISK_FULL_TEXT in text for text in recorded):
        raise DiskFullError(f"'{output}': {DISK_FULL_TEXT.lower()}; {FULL_HINT}")
    probe = record.directory / ".space-probe"
    try:
        with open(probe, "wb") as file:
            file.write(bytes(1 << 16))
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        if isinstance(describe_os_error(error, output), DiskFullError):
            raise DiskFullError(f"'{output}': {DISK_FULL_TEXT.lower()}; {FULL_HINT}") from None
    finally:
        probe.unlink(missing_ok=True)
