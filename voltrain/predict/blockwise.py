"""Blockwise prediction over a ROI of any size: what ``voltrain predict`` does.

One daisy task tiles the ROI into blocks whose output is the network's output shape and
whose input is that plus the network's context, so neighbouring outputs meet without
seams. daisy runs ``workers`` worker processes (or ``--worker-command`` jobs); each loads
the checkpoint once and predicts block after block. Blocks already marked done are
skipped (daisy ``check_function``), so a rerun of the same command resumes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from funlib.geometry import Roi

from voltrain.blocks.run import (
    BlockRunOptions,
    BlocksFailedError,
    BlocksInterruptedError,
    run_stage,
)
from voltrain.faults.lock import DirectoryLock
from voltrain.faults.os_errors import reporting_os_errors
from voltrain.predict.launch import PredictionWorker
from voltrain.predict.output import OutputStore, block_write_rois
from voltrain.predict.plan import plan_prediction
from voltrain.predict.spec import PredictionSpec

logger = logging.getLogger(__name__)

TASK_ID = "voltrain_predict"
__all__ = ["BlocksFailedError", "BlocksInterruptedError", "PredictionResult", "predict"]


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
    block_shape: list[int] | None = None,
    weights: str = "student",
) -> PredictionResult:
    """Predict ``input`` over ``roi`` with the checkpoint into the ``output`` array.

    Everything is checked before the output array is created. Raises
    ``BlocksFailedError`` if some blocks failed ``max_retries + 1`` times, naming them.
    """
    options = BlockRunOptions(workers, block_timeout, max_retries, host, progress)
    options.check()
    # One torch thread per local worker: process parallelism scales better than torch's
    # intra-op threads on these convolutions (benchmarks/predict.py), and never
    # oversubscribes. A worker started by a command owns its node's cores.
    cpu_threads = None if worker_command else 1
    spec = plan_prediction(
        config,
        checkpoint,
        input,
        output,
        roi,
        device,
        cpu_threads,
        worker_command,
        block_shape,
        weights,
    )
    # A second run on the same output would predict every block again: one run at a time.
    lock = DirectoryLock(f"{spec.output}.lock", f"--output {spec.output}")
    with reporting_os_errors(spec.output), lock:
        return _predict_planned(spec, options, overwrite)


def _predict_planned(
    spec: PredictionSpec, options: BlockRunOptions, overwrite: bool
) -> PredictionResult:
    store = OutputStore(spec.output)
    if store.exists() and not overwrite:
        store.check_resumable(spec)
    else:
        store.create(spec)
    write_rois = block_write_rois(spec)
    todo = len(store.missing_blocks(write_rois))
    voxels = int(np.prod(spec.roi.shape / spec.output_voxel))
    result = PredictionResult(spec.output, len(write_rois), todo, 0.0, voxels)
    if store.is_complete():
        result.blocks_predicted = 0
        return result
    spec.write(store.worker_spec)
    start = time.perf_counter()
    context = spec.context
    run_stage(
        TASK_ID,
        store.blocks,
        spec.output,
        spec.roi.grow(context, context),
        (spec.block_read_roi, spec.block_write_roi),
        write_rois,
        PredictionWorker(spec.model_dump_json(), str(store.worker_spec), spec.worker_command),
        options,
    )
    result.seconds = time.perf_counter() - start
    store.set_complete(True)
    return result
