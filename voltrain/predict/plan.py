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

from voltrain.data import open_array
from voltrain.errors import ConfigError, DataError
from voltrain.experiment import ExperimentConfig, load_config
from voltrain.models.unet import build_model, output_shape, valid_input_shape
from voltrain.predict.output import split_container
from voltrain.predict.spec import PredictionSpec, parse_roi
from voltrain.trainers.checkpoint import load_checkpoint, load_model_state

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
) -> PredictionSpec:
    """Check config, checkpoint, input, ROI and output path; return the prediction's spec.

    ``block_shape`` is each block's output in voxels (default: the training output shape);
    a fully convolutional net predicts a larger block with the same weights, reading the
    same context around it.
    """
    from voltrain.run import resolve_device

    config = load_config(config_path)
    task = config.task.build()
    input_shape, out_shape = _block_shapes(config, block_shape)
    checkpoint = str(Path(checkpoint).resolve())
    state = load_checkpoint(Path(checkpoint))
    load_model_state(build_model(config.model, 1, task.num_channels), state, checkpoint)
    raw = open_array(str(Path(input_path).resolve()), "--input")
    _check_voxel_size(raw, config, state, checkpoint, input_path)
    normalize_factor = getattr(config.trainer, "normalize_factor", None)
    if normalize_factor is None and raw.dtype not in AUTO_NORMALIZED_DTYPES:
        raise DataError(
            f"--input '{input_path}': dtype {raw.dtype} has no automatic normalisation; set "
            "trainer.normalize_factor in the config"
        )
    roi = _checked_roi(roi, raw, input_path)
    output_path = str(Path(output_path).resolve())
    split_container(output_path)
    if Path(output_path) == Path(input_path).resolve():
        raise ConfigError(f"--output '{output_path}': is the input array")
    resolve_device(device)
    return PredictionSpec(
        model=config.model,
        task=config.task,
        checkpoint=checkpoint,
        input=str(Path(input_path).resolve()),
        output=output_path,
        voxel_size=list(raw.voxel_size),
        roi_offset=list(roi.offset),
        roi_shape=list(roi.shape),
        input_shape=list(input_shape),
        output_shape=list(out_shape),
        num_channels=task.num_channels,
        normalize_factor=normalize_factor,
        intensity_maps=_intensity_maps(config),
        device=device,
        cpu_threads=cpu_threads,
        worker_command=worker_command,
        checkpoint_sha256=_file_sha256(Path(checkpoint)),
    )


def _block_shapes(config: ExperimentConfig, block_shape) -> tuple[Coordinate, Coordinate]:
    """The (input, output) voxels of a block: the training shapes, or those of a block whose
    output is ``block_shape``."""
    input_shape = Coordinate(config.trainer.input_shape)
    out_shape = output_shape(config.model, input_shape)
    if any((i - o) % 2 for i, o in zip(input_shape, out_shape, strict=True)):
        raise ConfigError(
            f"trainer.input_shape: {list(input_shape)} -> output {list(out_shape)} crops an odd "
            "number of voxels on some axis; blocks could not be centred"
        )
    if block_shape is None:
        return input_shape, out_shape
    block = Coordinate(int(size) for size in block_shape)
    text = f"--block-shape {' '.join(map(str, block))}"
    if len(block) != 3 or any(size <= 0 for size in block):
        raise ConfigError(f"{text}: expected 3 positive sizes (z, y, x voxels)")
    block_input = block + (input_shape - out_shape)
    try:
        fits = output_shape(config.model, block_input) == block
    except ConfigError:
        fits = False
    if not fits:
        suggestion = valid_input_shape(config.model, block_input)
        nearest = output_shape(config.model, suggestion)
        raise ConfigError(
            f"{text}: the U-Net cannot output a block of this shape; the nearest larger "
            f"block is {' '.join(map(str, nearest))}"
        )
    return block_input, block


def _check_voxel_size(
    raw: Array, config: ExperimentConfig, state: dict, checkpoint: str, input_path: str
) -> None:
    """The input must have the training data's voxel size, where that is known."""
    trained, source = training_voxel_size(config, state, checkpoint)
    if trained is None:
        logger.warning(
            "cannot check the input's voxel size: the training data '%s' is gone and the "
            "checkpoint records no voxel_size",
            config.data.train[0].gt,
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
    """The voxel size the network was trained at and where it was read, if known.

    From ``data.train[0].gt`` when it still exists (only its metadata is read), else from
    the checkpoint's ``voxel_size`` key.
    """
    gt = config.data.train[0].gt
    try:
        return open_array(gt, "data.train[0].gt").voxel_size, f"data.train[0].gt '{gt}'"
    except DataError:
        pass
    if state.get("voxel_size") is not None:
        return Coordinate(state["voxel_size"]), f"checkpoint '{checkpoint}'"
    return None, ""


def _checked_roi(roi: str | Roi | None, raw: Array, input_path: str) -> Roi:
    if roi is None:
        return raw.roi
    text = roi if isinstance(roi, str) else f"{roi.offset}:{roi.shape}"
    if isinstance(roi, str):
        roi = parse_roi(roi)
    voxel_size = raw.voxel_size
    if roi.snap_to_grid(voxel_size, mode="grow") != roi:
        raise ConfigError(
            f"--roi {text}: offset and shape must be multiples of the input voxel size "
            f"{tuple(voxel_size)}"
        )
    if not raw.roi.contains(roi):
        raise ConfigError(
            f"--roi {text}: ROI {roi} is not inside the input '{input_path}' ROI {raw.roi}"
        )
    return roi


def _intensity_maps(config: ExperimentConfig) -> list[tuple[float, float]]:
    """Fixed intensity maps the network saw on every sample; prediction applies them too."""
    maps = []
    for index, augment in enumerate(getattr(config.trainer, "augments", [])):
        if augment.type != "intensity_scale_shift":
            continue
        if augment.p < 1:
            logger.warning(
                "trainer.augments[%d]: intensity_scale_shift with p=%s is not applied at "
                "prediction (only p=1 maps are)",
                index,
                augment.p,
            )
            continue
        maps.append((augment.scale, augment.shift))
    return maps


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
