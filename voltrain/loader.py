"""A multiprocess loader of training batches from a ``TrainingPipeline``.

Sample ``i`` of the batch of iteration ``n`` is drawn with the seed
``sample_seed(seed, n, i, rank)``, whichever worker draws it, so the same config gives the
same batches for any number of workers, and a run resumed at iteration ``n`` sees the batches
an uninterrupted run would have seen.

Workers are started with the ``spawn`` method: forking a process after dask's thread pool has
started deadlocks, and funlib.persistence arrays are dask-backed. Every wait for a batch has a
bound (``timeout``) and ends in an error.

The pipeline reaches spawned workers through a file, not through their start payload.
``Process.start()`` writes the payload into a pipe; a payload larger than the pipe buffer
(64 KiB; a sampling map alone is often larger) blocks the parent until that child has
imported torch, gunpowder and numba to unpickle it, so workers would start one after
another. With a small payload they all start at once.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from voltrain.faults.data_errors import OnDataError, draw_sample
from voltrain.pipeline import TrainingPipeline
from voltrain.seeding import sample_seed


class PipelineFile:
    """A ``TrainingPipeline`` pickled once into a private temporary file.

    Pickling this object carries only the file's path; the file is removed when the
    object that wrote it is garbage-collected (or the process exits).
    """

    def __init__(self, pipeline: TrainingPipeline):
        directory = tempfile.mkdtemp(prefix="voltrain-pipeline-")
        self.path = Path(directory) / "pipeline.pkl"
        self.path.write_bytes(pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL))
        self._cleanup = weakref.finalize(self, shutil.rmtree, directory, ignore_errors=True)

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]

    def load(self) -> TrainingPipeline:
        return pickle.loads(self.path.read_bytes())


class SampleDataset(Dataset):
    """Map-style dataset: global sample number -> one training sample (dict of arrays).

    With ``ship_by_file`` the pipeline travels to workers as a ``PipelineFile`` and is
    loaded on the worker's first sample.
    """

    def __init__(
        self,
        pipeline: TrainingPipeline,
        seed: int,
        batch_size: int,
        rank: int = 0,
        ship_by_file: bool = False,
        on_data_error: OnDataError = "fail",
    ):
        self.pipeline: TrainingPipeline | None = pipeline
        self.seed = seed
        self.batch_size = batch_size
        self.rank = rank
        self.on_data_error = on_data_error
        self.pipeline_file = PipelineFile(pipeline) if ship_by_file else None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.pipeline_file is not None:
            state["pipeline"] = None
        return state

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> dict:
        if self.pipeline is None:
            self.pipeline = self.pipeline_file.load()
        iteration, sample_index = divmod(index, self.batch_size)
        seed = sample_seed(self.seed, iteration, sample_index, self.rank)
        return draw_sample(self.pipeline, seed, self.on_data_error, self.pipeline.max_attempts)


class IterationSampler(Sampler[int]):
    """Global sample numbers of iterations ``start, start + 1, ...`` (endless)."""

    def __init__(self, start_iteration: int, batch_size: int):
        self.start = start_iteration * batch_size

    def __iter__(self) -> Iterator[int]:
        index = self.start
        while True:
            yield index
            index += 1

    def __len__(self) -> int:
        return 2**62


def _worker_init(_worker_id: int) -> None:
    # One core per loader worker: the kernels are single-threaded by design.
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def make_loader(
    pipeline: TrainingPipeline,
    seed: int,
    batch_size: int,
    start_iteration: int,
    num_workers: int,
    pin_memory: bool = False,
    timeout: float = 600.0,
    rank: int = 0,
    ship_pipeline_by_file: bool = True,
    on_data_error: OnDataError = "fail",
) -> DataLoader:
    """A DataLoader yielding one collated batch (dict of tensors) per iteration.

    With ``num_workers == 0`` samples are drawn in this process (no timeout applies then,
    but sampling itself is bounded by ``TrainingPipeline.max_attempts``).
    ``ship_pipeline_by_file`` sends the pipeline to the workers through a file (see the
    module docstring); False puts it into every worker's start payload.
    """
    ship_by_file = ship_pipeline_by_file and num_workers > 0
    dataset = SampleDataset(
        pipeline, seed, batch_size, rank, ship_by_file=ship_by_file, on_data_error=on_data_error
    )
    sampler = IterationSampler(start_iteration, batch_size)
    kwargs = {}
    if num_workers > 0:
        kwargs = dict(
            multiprocessing_context="spawn",
            persistent_workers=True,
            prefetch_factor=2,
            timeout=timeout,
            worker_init_fn=_worker_init,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        **kwargs,
    )
