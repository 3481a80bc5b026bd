"""What a training sample does when it meets an unreadable chunk (``trainer.on_data_error``).

``fail`` (the default) stops the run with the one-line ``UnreadableChunkError``. ``skip``
draws the sample again with a seed derived from its own and the attempt number, so a run
stays reproducible; each chunk is warned about once per process, the redraws are counted
(``data_errors`` in metrics.jsonl), and a sample that meets bad chunks on every one of its
``max_attempts`` draws still ends the run with a clear error.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from voltrain.errors import DataError, UnreadableChunkError
from voltrain.seeding import derive_seed

logger = logging.getLogger(__name__)

OnDataError = Literal["fail", "skip"]
# Mixed into redraw seeds, so they never equal another sample's seed by construction.
_REDRAW_STREAM = 0xDA7A

_warned: set[str] = set()


def redraw_seed(seed: int, attempt: int) -> int:
    """The seed of draw ``attempt`` (1, 2, ...) of the sample whose first seed is ``seed``."""
    return derive_seed(seed, _REDRAW_STREAM, attempt)


def draw_sample(pipeline, seed: int, on_data_error: OnDataError, max_attempts: int) -> dict:
    """One sample from ``pipeline.request_sample``; with ``skip``, redrawn past unreadable
    chunks. The sample carries ``data_errors``: how many draws failed before it."""
    if on_data_error == "fail":
        sample = pipeline.request_sample(seed)
        check_finite_raw(sample, pipeline)
        sample["data_errors"] = np.int64(0)
        return sample
    last: UnreadableChunkError | None = None
    for attempt in range(max_attempts):
        try:
            sample = pipeline.request_sample(seed if attempt == 0 else redraw_seed(seed, attempt))
        except UnreadableChunkError as error:
            last = error
            if str(error) not in _warned:
                _warned.add(str(error))
                logger.warning(
                    "skipping samples that read it (trainer.on_data_error: skip): %s", error
                )
            continue
        check_finite_raw(sample, pipeline)
        sample["data_errors"] = np.int64(attempt)
        return sample
    raise DataError(
        f"trainer.on_data_error: skip, but all {max_attempts} draws of a sample "
        f"(trainer.max_sampling_attempts) met unreadable chunks; the last: {last}"
    )


def check_finite_raw(sample: dict, pipeline) -> None:
    """Raise ``DataError`` naming the dataset and the sample's raw ROI if raw holds NaN or
    infinity (float raw data), which would otherwise surface only as a non-finite loss."""
    raw = sample.get("raw", sample.get("raw_source"))
    if raw is None or not np.issubdtype(raw.dtype, np.floating) or np.isfinite(raw).all():
        return
    dataset = pipeline.datasets[int(sample["dataset_index"])]
    voxel_size = [int(v) for v in sample["voxel_size"]]
    offset = [int(v) for v in sample["raw_offset"]]
    shape = [n * v for n, v in zip(raw.shape[-3:], voxel_size, strict=True)]
    bad = int(raw.size - np.isfinite(raw).sum())
    raise DataError(
        f"data.train '{dataset.name}': raw ({dataset.raw}) holds {bad} NaN or infinite "
        f"value(s) in the sample at ROI {','.join(map(str, offset))}:"
        f"{','.join(map(str, shape))} (world units); fix or mask them in the data"
    )
