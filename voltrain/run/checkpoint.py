"""Checkpoints: written atomically, found again, pruned, and loaded strictly or by name.

A run's checkpoints are ``iteration_XXXXXXXX.pt``; the best one by validation loss is
``best.pt`` beside them, outside the rotation of ``keep_checkpoint_max``.
"""

from __future__ import annotations

import json
import random
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from voltrain.atomic import atomic_write
from voltrain.errors import CheckpointError, ConfigError
from voltrain.faults.os_errors import RecordingWriter

_NAME = re.compile(r"^iteration_(\d+)\.pt$")
BEST_NAME = "best.pt"


def checkpoint_path(directory: Path, iteration: int) -> Path:
    return Path(directory) / f"iteration_{iteration:08d}.pt"


def save_checkpoint(directory: Path, iteration: int, state: dict) -> Path:
    """Write ``state`` as the checkpoint of ``iteration``; see ``atomic_save``."""
    return atomic_save(checkpoint_path(directory, iteration), state)


def atomic_save(final: Path, state: dict) -> Path:
    """Write ``state`` to ``final``: temporary file, fsync, rename, fsync of the directory.

    A process killed while writing leaves only a temporary file, never a truncated
    checkpoint under the final name.
    """
    return atomic_write(final, lambda file: _save(state, file, Path(final)), durable=True)


def _save(state: dict, file, final: Path) -> None:
    writer = RecordingWriter(file, final)
    try:
        torch.save(state, writer)
    except RuntimeError:
        # torch reports a failed write (a full disk) without its cause
        if writer.error is not None:
            raise writer.error from None
        raise


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every complete checkpoint in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(directory: Path) -> Path | None:
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1][1] if checkpoints else None


def prune_checkpoints(directory: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` iteration checkpoints (0: keep all); ``best.pt``
    is never removed. Returns the removed paths."""
    if keep <= 0:
        return []
    removed = [path for _, path in list_checkpoints(directory)[:-keep]]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint's state dict; a missing or corrupt file is a ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if not zipfile.is_zipfile(path):
        # torch would try its legacy pickle format and blame "objects other than tensors"
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt or not a checkpoint: not a PyTorch zip archive "
            "(truncated, overwritten, or another kind of file)"
        )
    try:
        # weights_only: a checkpoint from elsewhere (weights_from) cannot run code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "Weights only load failed" in reason:
            reason = "it holds objects other than tensors and plain data, which could run code"
        raise CheckpointError(f"checkpoint '{path}' is corrupt or unreadable: {reason}") from None
    if not isinstance(state, dict) or "model" not in state or "iteration" not in state:
        raise CheckpointError(f"checkpoint '{path}' is not a voltrain checkpoint")
    return state


def model_weights(state: dict, path: Path, weights: str = "student") -> dict:
    """The network weights a checkpoint holds: the trained model's (``student``), or the mean
    teacher of a semi-supervised run (``teacher``, kept as ``trainer.teacher``)."""
    if weights == "student":
        return state["model"]
    if weights != "teacher":
        raise ConfigError(f"--weights: expected student or teacher, got '{weights}'")
    teacher = (state.get("trainer") or {}).get("teacher")
    if teacher is None:
        raise CheckpointError(
            f"--weights teacher: checkpoint '{path}' holds no teacher (only a "
            "trainer.type: semi_supervised run keeps one)"
        )
    return teacher


def load_model_state(
    model: torch.nn.Module, state: dict, path: Path, weights: str = "student"
) -> None:
    """Load model weights (see ``model_weights``) strictly: a checkpoint of another model is
    an error, not a partial load."""
    try:
        model.load_state_dict(model_weights(state, path, weights), strict=True)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(
            f"checkpoint '{path}' does not fit the configured model: {detail}"
        ) from None


@dataclass
class WeightsReport:
    """Which tensors ``load_matching_weights`` took from a checkpoint.

    Attributes:
        source: the checkpoint file.
        matched: model keys loaded (same name and shape).
        missing: model keys the checkpoint lacks (left as initialised).
        unexpected: checkpoint keys the model lacks (ignored).
        mismatched: keys in both with different shapes (left as initialised).
    """

    source: str
    matched: list[str]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]

    def summary(self) -> str:
        return (
            f"weights from {self.source}: {len(self.matched)} matched, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} with another shape"
        )

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


def resolve_weights_source(source: str | Path) -> Path:
    """A checkpoint file as given, or the latest checkpoint of a run directory."""
    source = Path(source)
    if source.is_dir():
        found = latest_checkpoint(source / "checkpoints") or latest_checkpoint(source)
        if found is None:
            raise CheckpointError(f"trainer.weights_from: no checkpoint in '{source}'")
        return found
    return source


def load_matching_weights(model: torch.nn.Module, source: str | Path) -> WeightsReport:
    """Initialise ``model`` from the tensors of a checkpoint that match by name and shape.

    A corrupt file, or one of which no tensor fits, is a ``CheckpointError``.
    """
    path = resolve_weights_source(source)
    weights = load_checkpoint(path)["model"]
    own = model.state_dict()
    matched = [k for k in own if k in weights and weights[k].shape == own[k].shape]
    report = WeightsReport(
        source=str(path),
        matched=matched,
        missing=[k for k in own if k not in weights],
        unexpected=[k for k in weights if k not in own],
        mismatched=[k for k in own if k in weights and weights[k].shape != own[k].shape],
    )
    if not matched:
        raise CheckpointError(
            f"trainer.weights_from: no tensor of '{path}' fits the configured model "
            f"({len(report.mismatched)} with another shape, {len(report.unexpected)} unknown)"
        )
    model.load_state_dict({k: weights[k] for k in matched}, strict=False)
    return report


def capture_rng_state() -> dict:
    """Every global random state training may touch: torch (CPU and CUDA), numpy, random.

    Kept to tensors and plain values, so checkpoints load with ``weights_only=True``.
    """
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [
            name,
            torch.from_numpy(keys.astype(np.int64)),
            position,
            has_gauss,
            cached_gaussian,
        ],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    keys = np.asarray(keys, dtype=np.int64).astype(np.uint32)
    np.random.set_state((name, keys, position, has_gauss, cached_gaussian))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
