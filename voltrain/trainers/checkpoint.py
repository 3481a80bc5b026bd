"""Checkpoints: model, optimizer and iteration, written atomically and found again."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch

from voltrain.errors import CheckpointError

_NAME = re.compile(r"^iteration_(\d+)\.pt$")


def checkpoint_path(directory: Path, iteration: int) -> Path:
    return Path(directory) / f"iteration_{iteration:08d}.pt"


def save_checkpoint(directory: Path, iteration: int, state: dict) -> Path:
    """Write ``state`` for ``iteration``: temporary file, fsync, rename.

    A process killed while writing leaves only a temporary file, never a truncated
    checkpoint under the final name.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, iteration)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, final)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)
    return final


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


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint's state dict; a missing or corrupt file is a ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(f"checkpoint '{path}' is corrupt or unreadable: {error}") from None
    if not isinstance(state, dict) or "model" not in state or "iteration" not in state:
        raise CheckpointError(f"checkpoint '{path}' is not a voltrain checkpoint")
    return state


def load_model_state(model: torch.nn.Module, state: dict, path: Path) -> None:
    """Load model weights strictly: a checkpoint of another model is an error, not a partial
    load."""
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint '{path}' does not fit the configured model: {first_line}"
        ) from None
