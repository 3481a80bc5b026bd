"""A multiprocess loader of training batches from a ``TrainingPipeline``.

Sample ``i`` of the batch of iteration ``n`` is drawn with the seed
``sample_seed(seed, n, i, rank)``, whichever worker draws it, so the same config gives the
same batches for any number of workers, and a run resumed at iteration ``n`` sees the batches
an uninterrupted run would have seen.

Workers are started with the ``spawn`` method: forking a process after dask's thread pool has
started deadlocks, and funlib.persistence arrays are dask-backed. Every wait for a batch has a
bound (``timeout``) and ends in an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from voltrain.faults.data_errors import OnDataError, draw_sample
from voltrain.pipeline import TrainingPipeline
from voltrain.seeding import sample_seed


class SampleDataset(Dataset):
    """Map-style dataset: global sample number -> one training sample (dict of arrays)."""

    def __init__(
        self,
        pipeline: TrainingPipeline,
        seed: int,
        batch_size: int,
        rank: int = 0,
        on_data_error: OnDataError = "fail",
    ):
        self.pipeline = pipeline
        self.seed = seed
        self.batch_size = batch_size
        self.rank = rank
        self.on_data_error = on_data_error

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> dict:
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
    on_data_error: OnDataError = "fail",
) -> DataLoader:
    """A DataLoader yielding one collated batch (dict of tensors) per iteration.

    With ``num_workers == 0`` samples are drawn in this process (no timeout applies then,
    but sampling itself is bounded by ``TrainingPipeline.max_attempts``).
    """
    dataset = SampleDataset(pipeline, seed, batch_size, rank, on_data_error)
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
