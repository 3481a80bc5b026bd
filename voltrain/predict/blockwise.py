"""Blockwise prediction over a ROI of any size: what ``voltrain predict`` does.

One daisy task tiles the ROI into blocks whose output is the network's output shape and
whose input is that plus the network's context, so neighbouring outputs meet without
seams. daisy runs ``workers`` worker processes (or ``--worker-command`` jobs); each loads
the checkpoint once and predicts block after block. Blocks already marked done are
skipped (daisy ``check_function``), so a rerun of the same command resumes.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from funlib.geometry import Coordinate, Roi

from voltrain.errors import VoltrainError
from voltrain.faults.console import stderr_into
from voltrain.faults.lock import DirectoryLock
from voltrain.faults.os_errors import DiskFullError, describe_os_error, reporting_os_errors
from voltrain.predict.launch import PredictionWorker
from voltrain.predict.output import BlockIsDone, OutputStore, block_write_rois
from voltrain.predict.plan import plan_prediction
from voltrain.predict.spec import PredictionSpec

logger = logging.getLogger(__name__)

TASK_ID = "voltrain_predict"
MAX_LISTED_BLOCKS = 5
DISK_FULL_TEXT = "No space left on device"
FULL_HINT = "finished blocks are kept; free space and rerun the command to resume"


class PredictionInterruptedError(VoltrainError):
    """Ctrl-C stopped the prediction; exit code 130, as for SIGINT."""

    exit_code = 130


class BlocksFailedError(VoltrainError):
    """Some blocks failed on every attempt; the output stays marked incomplete."""

    exit_code = 1


@dataclass
class PredictionResult:
    """Where the prediction went and what this run did.

    Attributes:
        output: the output array path.
        blocks: blocks in the ROI.
        blocks_predicted: blocks predicted by this run (the others were done before).
        seconds: wall time of the blockwise run.
        voxels: voxels in the ROI.
    """

    output: str
    blocks: int
    blocks_predicted: int
    seconds: float
    voxels: int

    @property
    def voxels_per_second(self) -> float:
        return self.voxels * self.blocks_predicted / max(self.blocks, 1) / max(self.seconds, 1e-9)


def predict(
    config: str | Path,
    checkpoint: str | Path,
    input: str,
    output: str,
    roi: str | Roi | None = None,
    workers: int = 1,
    device: str = "auto",
    block_timeout: float = 600.0,
    max_retries: int = 2,
    host: str = "127.0.0.1",
    worker_command: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PredictionResult:
    """Predict ``input`` over ``roi`` with the checkpoint into the ``output`` array.

    Everything is checked before the output array is created. Raises
    ``BlocksFailedError`` if some blocks failed ``max_retries + 1`` times, naming them.
    """
    if workers < 1:
        raise VoltrainError(f"--workers must be at least 1, got {workers}")
    if block_timeout <= 0:
        raise VoltrainError(f"--block-timeout must be positive, got {block_timeout}")
    if max_retries < 0:
        raise VoltrainError(f"--max-retries must be 0 or more, got {max_retries}")
    # One torch thread per local worker: process parallelism scales better than torch's
    # intra-op threads on these convolutions (benchmarks/predict.py), and never
    # oversubscribes. A worker started by a command owns its node's cores.
    cpu_threads = None if worker_command else 1
    spec = plan_prediction(
        config, checkpoint, input, output, roi, device, cpu_threads, worker_command
    )
    # A second run on the same output would predict every block again: one run at a time.
    lock = DirectoryLock(f"{spec.output}.lock", f"--output {spec.output}")
    with reporting_os_errors(spec.output), lock:
        return _predict_planned(
            spec, workers, block_timeout, max_retries, host, overwrite, progress
        )


def _predict_planned(
    spec: PredictionSpec,
    workers: int,
    block_timeout: float,
    max_retries: int,
    host: str,
    overwrite: bool,
    progress: bool,
) -> PredictionResult:
    store = OutputStore(spec.output)
    if store.exists() and not overwrite:
        store.check_resumable(spec)
    else:
        store.create(spec)
    write_rois = block_write_rois(spec)
    todo = len(store.missing_blocks(write_rois))
    voxels = int(np.prod(spec.roi.shape / Coordinate(spec.voxel_size)))
    result = PredictionResult(spec.output, len(write_rois), todo, 0.0, voxels)
    if store.is_complete():
        result.blocks_predicted = 0
        return result
    spec.write(store.worker_spec)
    start = time.perf_counter()
    abandoned = run_blocks(spec, store, workers, block_timeout, max_retries, host, progress)
    result.seconds = time.perf_counter() - start
    missing = store.missing_blocks(write_rois)
    if missing:
        _raise_if_disk_full(store, missing)
        raise BlocksFailedError(_failure_message(store, missing, len(write_rois), abandoned))
    store.set_complete(True)
    return result


def run_blocks(
    spec: PredictionSpec,
    store: OutputStore,
    workers: int,
    block_timeout: float,
    max_retries: int,
    host: str,
    progress: bool,
) -> str | None:
    """Run the daisy task; return the reason if daisy abandoned it (workers kept dying)."""
    import daisy.v2 as daisy
    from daisy import logging as daisy_logging

    context = spec.context
    with warnings.catch_warnings():
        # daisy warns that check_function runs per block on the server; here it is one
        # stat() of a marker file, and the markers are the record that survives kills.
        warnings.filterwarnings("ignore", message=r"Task\(check_function", category=UserWarning)
        task = daisy.Task(
            task_id=TASK_ID,
            total_roi=spec.roi.grow(context, context),
            read_roi=spec.block_read_roi,
            write_roi=spec.block_write_roi,
            process_function=PredictionWorker(
                spec.model_dump_json(), str(store.worker_spec), spec.worker_command
            ),
            check_function=BlockIsDone(spec.output),
            read_write_conflict=False,
            fit="overhang",
            max_workers=workers,
            max_retries=max_retries,
            timeout=block_timeout,
            tracking_path=False,
        )
    previous_log_dir = daisy_logging.get_log_basedir()
    daisy_logging.set_log_basedir(store.logs_dir)
    try:
        # daisy's and the workers' messages go to the log; the command ends in one line
        with stderr_into(store.logs_dir / "driver.log"):
            daisy.run_blockwise(
                task, progress=progress, host=host, summary=False, return_states=True
            )
    except KeyboardInterrupt:
        raise PredictionInterruptedError(
            f"--output {spec.output}: interrupted; finished blocks are kept and a rerun of "
            f"the command resumes (details in {store.logs_dir})"
        ) from None
    except RuntimeError as error:  # daisy abandons a task whose workers keep crashing
        reason = str(error).strip().splitlines()[0]
        # The first line may end by introducing a traceback that the worker logs hold.
        return re.sub(r"\s*[^.;]*:$", "", reason)
    finally:
        daisy_logging.set_log_basedir(previous_log_dir)
    return None


def _raise_if_disk_full(store: OutputStore, missing: list[Roi]) -> None:
    """Raise ``DiskFullError`` if blocks failed because the output's disk is full: a block
    recorded it, or not even a small file can be written there now."""
    recorded = [store.failure(roi) or "" for roi in missing]
    if any(DISK_FULL_TEXT in text for text in recorded):
        raise DiskFullError(f"'{store.output}': {DISK_FULL_TEXT.lower()}; {FULL_HINT}")
    try:
        with open(store.done_dir / ".space-probe", "wb") as probe:
            probe.write(bytes(1 << 16))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        full = describe_os_error(error, store.output)
        if isinstance(full, DiskFullError):
            raise DiskFullError(
                f"'{store.output}': {DISK_FULL_TEXT.lower()}; {FULL_HINT}"
            ) from None
    finally:
        (store.done_dir / ".space-probe").unlink(missing_ok=True)


def _failure_message(
    store: OutputStore, missing: list[Roi], total: int, abandoned: str | None
) -> str:
    listed = " ".join(f"[{_roi_text(roi)}]" for roi in missing[:MAX_LISTED_BLOCKS])
    more = len(missing) - MAX_LISTED_BLOCKS
    if more > 0:
        listed += f" and {more} more"
    errors = [error for error in (store.failure(roi) for roi in missing) if error]
    cause = f"; last error: {errors[0]}" if errors else ""
    if abandoned:
        cause += f"; daisy gave up: {abandoned}"
        if "timeout" in abandoned:
            cause += " (raise --block-timeout if blocks need longer)"
    return (
        f"{len(missing)} of {total} blocks failed (output ROIs {listed}){cause}; "
        f"'{store.output}' stays marked incomplete, rerun the command to retry them "
        f"(worker logs in {store.logs_dir})"
    )


def _roi_text(roi: Roi) -> str:
    """A ROI as OFFSET:SHAPE in world units, the form ``--roi`` takes."""
    return f"{','.join(map(str, roi.offset))}:{','.join(map(str, roi.shape))}"
