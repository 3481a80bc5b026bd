"""Check everything a prediction needs before anything is written, and build its spec.

Each problem a user can cause is a one-line ``VoltrainError`` naming the input: the config
key, the ``--roi``, ``--input`` or ``--checkpoint`` argument. Training data is never read,
except for the voxel size of ``data.train[0].gt`` when it still exists.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from funlib.geometry import Coordinate, Roi
from funlib.persistence import Array

from voltrain.data import open_array, raw_channels
from voltrain.errors import ConfigError, DataError
from voltrain.experiment import ExperimentConfig, load_config
from voltrain.inference import resolve_device
from voltrain.io.read import resolve_source
from voltrain.io.write import source_units
from voltrain.models import build_model
from voltrain.predict.output import split_container
from voltrain.predict.spec import PredictionSpec, parse_roi
from voltrain.run.checkpoint import load_checkpoint, load_model_state

logger = logging.getLogger(__name__)

AUTO_NORMALIZED_DTYPES = (np.uint8, np.uint16, np.float32)


def plan_prediction(
    config_path: str | Path,
    checkpoint: str | Path,
    input_path: str,
    output_path: str,
    roi: str | Roi | None = None,
    device: str = "auto",
    cpu_threads: int | None = None,
    worker_command: list[str] | None = None,
    block_shape: Sequence[int] | None = None,
    weights: str = "student",
) -> PredictionSpec:
    """Check config, checkpoint, input, ROI and output path; return the prediction's spec.

    ``block_shape`` is each block's output in voxels (default: the training output shape);
    a fully convolutional net predicts a larger block with the same weights, reading the
    same context around it. ``weights: teacher`` predicts with a semi-supervised run's
    mean teacher instead of the trained model.
    """
    config = load_config(config_path)
    task = config.task.build()
    input_shape, out_shape = _block_shapes(config, block_shape)
    checkpoint = str(Path(checkpoint).resolve())
    state = load_checkpoint(Path(checkpoint))
    input_path = resolve_source(input_path, Path.cwd())
    raw = open_array(input_path, "--input", channels=True)
    in_channels = _checked_channels(raw, state, checkpoint, input_path)
    model = build_model(config.model, in_channels, task.num_channels, input_shape)
    load_model_state(model, state, checkpoint, weights)
    _check_voxel_size(raw, config, state, checkpoint, input_path)
    raw_input = config.resolved_input()
    if raw_input.normalize_factor is None and raw.dtype not in AUTO_NORMALIZED_DTYPES:
        raise DataError(
            f"--input '{input_path}': dtype {raw.dtype} has no automatic normalisation; set "
            "input.normalize_factor in the config"
        )
    out_voxel_size = config.model.output_voxel_size(raw.voxel_size)
    roi = _checked_roi(roi, raw, input_path, out_voxel_size)
    output_path = str(Path(output_path).resolve())
    split_container(output_path)
    if Path(output_path) == Path(input_path):
        raise ConfigError(f"--output '{output_path}': is the input array")
    resolve_device(device)
    return PredictionSpec(
        model=config.model,
        task=config.task,
        checkpoint=checkpoint,
        input=input_path,
        output=output_path,
        voxel_size=list(raw.voxel_size),
        units=source_units(raw, "--input"),
        output_voxel_size=list(out_voxel_size),
        input_channels=in_channels,
        roi_offset=list(roi.offset),
        roi_shape=list(roi.shape),
        input_shape=list(input_shape),
        output_shape=list(out_shape),
        num_channels=task.num_channels,
        normalize_factor=raw_input.normalize_factor,
        intensity_maps=[(m.scale, m.shift) for m in raw_input.intensity_maps],
        device=device,
        cpu_threads=cpu_threads,
        worker_command=worker_command,
        checkpoint_sha256=_file_sha256(Path(checkpoint)),
        weights=weights,
    )


def _block_shapes(config: ExperimentConfig, block_shape) -> tuple[Coordinate, Coordinate]:
    """The (input, output) voxels of a block: the training shapes, or those of a block whose
    output is ``block_shape``."""
    input_shape = Coordinate(config.trainer.input_shape)
    out_shape = _centred_output_shape(config, input_shape)
    if block_shape is None:
        return input_shape, out_shape
    block = Coordinate(int(size) for size in block_shape)
    text = f"--block-shape {' '.join(map(str, block))}"
    if len(block) != 3 or any(size <= 0 for size in block):
        raise ConfigError(f"{text}: expected 3 positive sizes (z, y, x voxels)")
    factor = Coordinate(config.model.output_factor)
    block_input = block * factor + (input_shape - out_shape * factor)
    try:
        fits = config.model.output_shape(block_input) == block
    except ConfigError:
        fits = False
    if not fits:
        try:
            nearest = config.model.output_shape(config.model.valid_input_shape(block_input))
        except ConfigError:
            nearest = None
        suggestion = f"; the nearest larger block is {' '.join(map(str, nearest))}"
        raise ConfigError(
            f"{text}: the model cannot output a block of this shape"
            + (suggestion if nearest is not None else "")
        )
    return block_input, block


def _centred_output_shape(config: ExperimentConfig, input_shape: Coordinate) -> Coordinate:
    """The network's output shape, which must leave the same context on both sides."""
    out_shape = config.model.output_shape(input_shape)
    factor = config.model.output_factor
    if any((i - o * f) % 2 for i, o, f in zip(input_shape, out_shape, factor, strict=True)):
        raise ConfigError(
            f"trainer.input_shape: {list(input_shape)} -> output {list(out_shape)} crops an odd "
            "number of voxels on some axis; blocks could not be centred"
        )
    return out_shape


def checkpoint_input_channels(state: dict) -> int | None:
    """The input channels a checkpoint's network takes (its first convolution's), if known."""
    if state.get("input_channels") is not None:
        return int(state["input_channels"])
    weight = (state.get("model") or {}).get("down_blocks.0.0.weight")
    return None if weight is None else int(weight.shape[1])


def _checked_channels(raw: Array, state: dict, checkpoint: str, input_path: str) -> int:
    """Raw's channel count, which must be the checkpoint's input channel count."""
    channels = raw_channels(raw)
    expected = checkpoint_input_channels(state)
    if expected is not None and expected != channels:
        raise DataError(
            f"--checkpoint '{checkpoint}' takes {expected} input channel(s), but --input "
            f"'{input_path}' has {channels} (shape {tuple(raw.shape)})"
        )
    return channels


def _check_voxel_size(
    raw: Array, config: ExperimentConfig, state: dict, checkpoint: str, input_path: str
) -> None:
    """The input must have the training data's voxel size, where that is known."""
    trained, source = training_voxel_size(config, state, checkpoint)
    if trained is None:
        logger.warning(
            "cannot check the input's voxel size: the training data '%s' is gone and the "
            "checkpoint records no voxel_size",
            config.data.train[0].raw,
        )
        return
    if raw.voxel_size != trained:
        raise DataError(
            f"--input '{input_path}': voxel_size {tuple(raw.voxel_size)} does not match the "
            f"training voxel_size {tuple(trained)} (from {source})"
        )


def training_voxel_size(
    config: ExperimentConfig, state: dict, checkpoint: str
) -> tuple[Coordinate | None, str]:
    """The raw voxel size the network was trained at and where it was read, if known.

    From ``data.train[0].raw`` when it still exists (only its metadata is read), else from
    the checkpoint's ``voxel_size`` key (raw's).
    """
    raw = config.data.train[0].raw
    try:
        where = "data.train[0].raw"
        return open_array(raw, where, channels=True).voxel_size, f"{where} '{raw}'"
    except DataError:
        pass
    if state.get("voxel_size") is not None:
        return Coordinate(state["voxel_size"]), f"checkpoint '{checkpoint}'"
    return None, ""


def _checked_roi(roi: str | Roi | None, raw: Array, input_path: str, voxel_size: Coordinate) -> Roi:
    """The ROI to predict, on the output's grid (``voxel_size``) and inside the input."""
    if roi is None:
        whole = raw.roi.snap_to_grid(voxel_size, mode="shrink")
        if whole.empty:
            raise ConfigError(
                f"--input '{input_path}': ROI {raw.roi} holds no output voxel of "
                f"{tuple(voxel_size)}"
            )
        return whole
    text = roi if isinstance(roi, str) else f"{roi.offset}:{roi.shape}"
    if isinstance(roi, str):
        roi = parse_roi(roi)
    if roi.snap_to_grid(voxel_size, mode="grow") != roi:
        raise ConfigError(
            f"--roi {text}: offset and shape must be multiples of the output voxel size "
            f"{tuple(voxel_size)}"
        )
    if not raw.roi.contains(roi):
        raise ConfigError(
            f"--roi {text}: ROI {roi} is not inside the input '{input_path}' ROI {raw.roi}"
        )
    return roi


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
