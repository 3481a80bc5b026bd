"""Pictures of a run for people who would rather look than read: snapshot slices and the
loss curve as PNG files, written by one callback.

At every snapshot, ``snapshots/<iteration>.png`` shows the central z slice of raw, gt,
target and prediction side by side, over the same region (raw is cropped to the network's
output), and ``loss.png`` is redrawn from ``metrics.jsonl``; ``loss.png`` is redrawn once
more when training ends. Figures are drawn with matplotlib's Agg canvas (no display, no
global backend switch) and written atomically (temporary file, rename).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from voltrain.callbacks import Callback
from voltrain.tensorboard import centre_slice_image

if TYPE_CHECKING:
    from voltrain.trainers.base import Trainer

logger = logging.getLogger(__name__)

PANELS = ("raw", "gt", "target", "prediction")


class RunPictures(Callback):
    """Writes ``snapshots/<iteration>.png`` and ``loss.png`` into a run directory.

    Args:
        out_dir: the run directory; ``metrics.jsonl`` is read from it.
        value_range: the task's (low, high) of targets and predictions, drawn black to
            white (``Task.value_range``).
    """

    def __init__(self, out_dir: str | Path, value_range: tuple[float, float] = (0.0, 1.0)):
        self.out_dir = Path(out_dir)
        self.value_range = value_range

    def on_snapshot(self, iteration: int, path: Path, arrays: Mapping[str, np.ndarray]) -> None:
        target = self.out_dir / "snapshots" / f"{iteration}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        _save(snapshot_figure(iteration, arrays, self.value_range), target)
        self.write_loss_plot()

    def on_train_end(self, trainer: Trainer) -> None:
        # Called on the way out of a failed run too: a picture that cannot be written
        # (a full disk) must not hide the error that ended the run.
        try:
            self.write_loss_plot()
        except OSError as error:
            logger.warning("could not write %s: %s", self.out_dir / "loss.png", error)

    def write_loss_plot(self) -> Path | None:
        """Draw ``loss.png`` from ``metrics.jsonl``; None when there are no rows yet."""
        rows = read_metrics(self.out_dir / "metrics.jsonl")
        if not any(row.get("loss") is not None for row in rows):
            return None
        path = self.out_dir / "loss.png"
        _save(loss_figure(rows), path)
        return path


def snapshot_figure(
    iteration: int,
    arrays: Mapping[str, np.ndarray],
    value_range: tuple[float, float] = (0.0, 1.0),
):
    """The central z slices of raw, gt, target and prediction, side by side; raw is drawn
    over [0, 1], target and prediction over ``value_range``."""
    from matplotlib.figure import Figure

    names = [name for name in PANELS if name in arrays]
    output_shape = np.shape(arrays.get("gt", arrays[names[-1]]))[-3:]
    figure = Figure(figsize=(3.2 * len(names), 3.6))
    for index, name in enumerate(names):
        axes = figure.add_subplot(1, len(names), index + 1)
        data = _crop_to(np.asarray(arrays[name]), output_shape)
        if name == "gt":
            axes.imshow(label_colors(data[data.shape[0] // 2]), interpolation="nearest")
        else:
            image = centre_slice_image(data)
            rgb = image.transpose(1, 2, 0) if image.shape[0] == 3 else image[0]
            low, high = (0.0, 1.0) if name == "raw" else value_range
            axes.imshow(rgb, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        channels = ""
        if data.ndim == 4:
            channels = " (RGB: channels)" if len(data) == 3 else f" (channel 0 of {len(data)})"
        axes.set_title(f"{name}{channels}")
        axes.set_axis_off()
    figure.suptitle(f"iteration {iteration}: central z slice (y down, x right)")
    figure.tight_layout()
    return figure


def loss_figure(rows: list[dict]):
    """Training loss (and its running mean) and validation loss against iteration."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    logged = [(r["iteration"], r["loss"]) for r in rows if r.get("loss") is not None]
    iterations, losses = (np.asarray(v, dtype=float) for v in zip(*logged, strict=True))
    axes.plot(iterations, losses, color="0.7", linewidth=1, label="training loss")
    window = max(1, len(losses) // 10)
    if window >= 3:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        axes.plot(iterations[window - 1 :], smooth, color="C0", label=f"mean of {window}")
    validation = [(r["iteration"], r["validation_loss"]) for r in rows if "validation_loss" in r]
    if validation:
        axes.plot(*zip(*validation, strict=True), "o-", color="C3", label="validation loss")
    if np.all(losses > 0) and losses.max() > 10 * losses.min():
        axes.set_yscale("log")
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss")
    axes.set_title(f"loss up to iteration {int(iterations[-1])}")
    axes.legend()
    figure.tight_layout()
    return figure


def label_colors(labels: np.ndarray) -> np.ndarray:
    """An RGB image of label ids: background (0) black, each id its own stable colour."""
    ids = labels.astype(np.uint64)
    # A hash of the id (not its rank) keeps an object's colour across snapshots.
    mixed = (ids * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
    rgb = np.stack([(mixed >> np.uint64(shift)) & np.uint64(255) for shift in (0, 8, 16)], -1)
    rgb = 64 + (rgb.astype(np.float32) * 191 / 255)
    rgb[ids == 0] = 0
    return rgb / 255


def read_metrics(path: Path) -> list[dict]:
    """The rows of ``metrics.jsonl`` (a line cut short by a killed process is skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [row for row in rows if isinstance(row, dict) and "iteration" in row]


def _crop_to(data: np.ndarray, shape) -> np.ndarray:
    """The centre of ``data``'s spatial axes with ``shape`` (raw holds the network's
    context around the output on every side)."""
    spatial = data.shape[-3:]
    starts = [(s - t) // 2 if s > t else 0 for s, t in zip(spatial, shape, strict=True)]
    box = tuple(slice(b, b + min(s, t)) for b, s, t in zip(starts, spatial, shape, strict=True))
    return data[(Ellipsis, *box)]


def _save(figure, path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    figure.savefig(temporary, dpi=100, format="png")
    os.replace(temporary, path)
