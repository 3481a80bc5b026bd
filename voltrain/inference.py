"""The one inference path: raw -> normalise -> fixed intensity maps -> network -> output.

Blockwise validation (``voltrain.validation.blockwise``) and ``voltrain predict``'s workers
(``voltrain.predict.worker``) build the same graph here, so a block scored during training
is exactly the block ``voltrain predict`` writes. Training reads the same ``input`` section
(``InputConfig``): its normalisation comes first, its fixed maps last, after the augments.

Also here, because every blockwise job needs them: the check that a block's input can be
centred on its output (``check_centred``) and which device a process runs on
(``resolve_device``). How a ROI is cut into blocks is ``voltrain.blocks.record.tile_roi``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gunpowder as gp
import torch
from funlib.geometry import Coordinate
from funlib.persistence import Array
from pydantic import Field

from voltrain.config import StrictModel
from voltrain.errors import ConfigError
from voltrain.nodes.intensity_scale_shift import IntensityScaleShift
from voltrain.nodes.predict import Predict
from voltrain.nodes.zarr_source import ZarrSource


class IntensityMap(StrictModel):
    """A fixed map ``raw * scale + shift``; ``scale: 2, shift: -1`` maps [0, 1] to [-1, 1]."""

    scale: float = 1.0
    shift: float = 0.0


class InputConfig(StrictModel):
    """What the network sees of raw, in training, validation and prediction (``input``).

    Attributes:
        normalize_factor: raw is multiplied by it (None: 1/255 for uint8, 1/65535 for
            uint16, 1 for float).
        intensity_maps: fixed maps applied to every sample after normalising (in training
            after the augments), in order.
    """

    normalize_factor: float | None = Field(None, gt=0)
    intensity_maps: list[IntensityMap] = Field(default_factory=list)


def merge_input(section: InputConfig, legacy: InputConfig) -> InputConfig:
    """The ``input`` section completed by what older configs said in the trainer section
    (``trainer.normalize_factor``, ``intensity_scale_shift`` augments with ``p: 1``): the
    legacy maps come first, as they sat among the augments."""
    factor = section.normalize_factor
    if factor is None:
        factor = legacy.normalize_factor
    return InputConfig(
        normalize_factor=factor, intensity_maps=[*legacy.intensity_maps, *section.intensity_maps]
    )


def intensity_map_nodes(raw_key: gp.ArrayKey, maps: Sequence[IntensityMap]) -> list[gp.BatchFilter]:
    """One ``IntensityScaleShift`` node per fixed map, in order."""
    return [IntensityScaleShift(raw_key, scale=m.scale, shift=m.shift) for m in maps]


def inference_graph(
    raw: Array,
    raw_key: gp.ArrayKey,
    output_key: gp.ArrayKey,
    model: torch.nn.Module,
    input_config: InputConfig,
    context: Coordinate,
    activation: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    output_voxel_size: Coordinate | None = None,
) -> gp.Pipeline:
    """raw (zeros outside the array) -> normalise -> fixed maps -> network -> ``output_key``.

    A request for ``output_key`` over an output ROI reads raw over that ROI grown by
    ``context`` (world units) on each side. ``output_voxel_size``: the network's output
    voxel size when it is coarser than raw's (``model.output_downsample``).
    """
    graph = ZarrSource(raw_key, raw, interpolatable=True)
    graph += gp.Normalize(raw_key, factor=input_config.normalize_factor)
    for node in intensity_map_nodes(raw_key, input_config.intensity_maps):
        graph += node
    graph += Predict(
        model,
        raw_key,
        output_key,
        context,
        activation=activation,
        device=device,
        output_voxel_size=output_voxel_size,
    )
    return graph


def check_centred(input_shape: Sequence[int], output_shape: Sequence[int], key: str) -> None:
    """``ConfigError`` naming ``key`` when the input cannot be centred on the output (the
    network crops an odd number of voxels on some axis)."""
    crop = Coordinate(input_shape) - Coordinate(output_shape)
    if any(c % 2 for c in crop):
        raise ConfigError(
            f"{key}: input_shape {list(input_shape)} -> output {list(output_shape)} crops an "
            "odd number of voxels on some axis; blocks could not be centred"
        )


def resolve_device(name: str, worker_id: int | None = None) -> torch.device:
    """The device called ``name``: ``auto`` picks CUDA when available; ``cuda`` without a
    GPU is a ``ConfigError``. With ``worker_id`` (a blockwise worker) and a bare ``cuda``,
    the worker takes GPU ``worker_id % count``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available")
    if name == "cuda" and worker_id is not None:
        return torch.device(f"cuda:{worker_id % torch.cuda.device_count()}")
    return torch.device(name)
