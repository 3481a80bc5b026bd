"""The training log: ``metrics.jsonl`` rows and TensorBoard event files, written by one callback.

Every logging interval (``stats.log_due``) and every validation, the same figures go to both:
loss, learning rate, gradient norm (before clipping), data-wait time, step time, samples per
second, skipped steps, and the validation results. Snapshots add the z-centre slices of raw,
target and prediction as TensorBoard images.

A run resumed at iteration n starts with ``purge_step=n + 1``: TensorBoard drops the events
a killed run wrote past its last checkpoint, as ``metrics.jsonl`` is cut back there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from voltrain.callbacks import Callback

if TYPE_CHECKING:
    from voltrain.trainers.base import Trainer, TrainingIterationStats

# metrics.jsonl key -> TensorBoard tag.
SCALAR_TAGS = {
    "loss": "train/loss",
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
    "data_time": "time/data_wait_seconds",
    "time": "time/step_seconds",
    "samples_per_second": "time/samples_per_second",
    "skipped_steps": "train/skipped_steps",
    "amp_skipped_steps": "train/amp_skipped_steps",
}
SNAPSHOT_IMAGES = ("raw", "target", "prediction")


def truncate_metrics(path: Path, iteration: int) -> None:
    """Drop the rows of ``metrics.jsonl`` past ``iteration`` (and unreadable last lines)."""
    path = Path(path)
    if not path.exists():
        return
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed process
        if row.get("iteration", math.inf) <= iteration:
            rows.append(line)
    path.write_text("".join(row + "\n" for row in rows))


class MetricsLogger(Callback):
    """Writes ``metrics.jsonl`` and TensorBoard events into a run directory.

    Args:
        out_dir: the run directory (``metrics.jsonl`` and ``tensorboard/`` go there).
        tensorboard: also write TensorBoard events.

    Attributes:
        last_row: the last row written.
    """

    def __init__(self, out_dir: str | Path, tensorboard: bool = True):
        self.out_dir = Path(out_dir)
        self.tensorboard = tensorboard
        self.last_row: dict | None = None
        self._file = None
        self._writer = None

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    @property
    def tensorboard_dir(self) -> Path:
        return self.out_dir / "tensorboard"

    def on_train_begin(self, trainer: Trainer) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._file = self.metrics_path.open("a")
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(
                str(self.tensorboard_dir), purge_step=trainer.iteration + 1, flush_secs=30
            )

    def on_step_end(self, stats: TrainingIterationStats) -> bool:
        if not (stats.log_due or stats.validation) or self._file is None:
            return False
        row = stats.as_dict()
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        self.last_row = row
        if self._writer is not None:
            for key, tag in SCALAR_TAGS.items():
                if row.get(key) is not None:
                    self._writer.add_scalar(tag, row[key], stats.iteration)
            for key, value in (stats.validation or {}).items():
                tag = "validation/" + key.removeprefix("validation_")
                self._writer.add_scalar(tag, value, stats.iteration)
        return False

    def on_snapshot(self, iteration: int, path: Path, arrays: Mapping[str, np.ndarray]) -> None:
        if self._writer is None:
            return
        for name in SNAPSHOT_IMAGES:
            if name in arrays:
                image = centre_slice_image(arrays[name])
                self._writer.add_image(f"snapshot/{name}", image, iteration, dataformats="CHW")

    def on_train_end(self, trainer: Trainer) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def centre_slice_image(array: np.ndarray) -> np.ndarray:
    """The z-centre slice of a (z, y, x) or (c, z, y, x) array as a (1 or 3, y, x) image in
    [0, 1]: three channels show as RGB (e.g. affinities), others as their first channel."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3:
        array = array[np.newaxis]
    image = array[:, array.shape[1] // 2]
    if image.shape[0] != 3:
        image = image[:1]
    low, high = float(np.nanmin(image)), float(np.nanmax(image))
    if low < 0 or high > 1:
        # Outside [0, 1] (e.g. raw mapped to [-1, 1]): stretch to the full range to show it.
        image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return np.nan_to_num(image)
