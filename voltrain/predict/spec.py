"""What a prediction worker needs to know: plain, validated data that travels as JSON.

A ``PredictionSpec`` is built and checked once by the driver (``voltrain.predict.plan``),
pickled to daisy's local worker processes and written as ``worker.json`` for workers
started on other machines (``voltrain predict-worker``). It never refers to training data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from funlib.geometry import Coordinate, Roi
from pydantic import Field

from voltrain.config import StrictModel
from voltrain.errors import ConfigError
from voltrain.models import ModelConfigs
from voltrain.tasks import TaskConfigs


class PredictionSpec(StrictModel):
    """A checked prediction job: model, task, checkpoint, input, output and block layout.

    World-unit fields (``roi_*``, ``block_*``) are (z, y, x) in the input's units; voxel
    fields are marked as such.
    """

    model: ModelConfigs
    task: TaskConfigs
    checkpoint: str
    input: str
    output: str
    voxel_size: list[int] = Field(min_length=3, max_length=3, description="the input's")
    units: list[str] | None = Field(None, description="the input's units (OME names)")
    output_voxel_size: list[int] | None = Field(
        None, min_length=3, max_length=3, description="None: the input's"
    )
    input_channels: int = Field(1, gt=0, description="raw's channels, the network's input")
    roi_offset: list[int] = Field(min_length=3, max_length=3)
    roi_shape: list[int] = Field(min_length=3, max_length=3)
    input_shape: list[int] = Field(min_length=3, max_length=3, description="voxels")
    output_shape: list[int] = Field(min_length=3, max_length=3, description="voxels")
    num_channels: int = Field(gt=0)
    normalize_factor: float | None = None
    intensity_maps: list[tuple[float, float]] = Field(
        default_factory=list, description="(scale, shift) applied after normalisation"
    )
    device: str = "auto"
    cpu_threads: int | None = Field(None, gt=0, description="None: every core of the worker")
    worker_command: list[str] | None = None
    checkpoint_sha256: str = ""
    weights: Literal["student", "teacher"] = Field(
        "student", description="the checkpoint's model, or a semi-supervised run's teacher"
    )

    @property
    def roi(self) -> Roi:
        """The world ROI to predict, as requested."""
        return Roi(self.roi_offset, self.roi_shape)

    @property
    def output_voxel(self) -> Coordinate:
        """The voxel size of the output (the input's times ``model.output_downsample``)."""
        return Coordinate(self.output_voxel_size or self.voxel_size)

    @property
    def context(self) -> Coordinate:
        """World units the network input extends beyond its output on each side."""
        return self.model.context(self.input_shape, self.output_shape, self.voxel_size)

    @property
    def block_read_roi(self) -> Roi:
        """One block's input ROI, relative to the block's origin (world units)."""
        return Roi((0, 0, 0), Coordinate(self.input_shape) * Coordinate(self.voxel_size))

    @property
    def block_write_roi(self) -> Roi:
        """One block's output ROI, relative to the block's origin (world units)."""
        return Roi(self.context, Coordinate(self.output_shape) * self.output_voxel)

    def identity(self) -> dict:
        """What makes two predictions the same: a rerun may only resume its own output."""
        network = json.dumps(
            {
                "model": self.model.model_dump(mode="json"),
                "task": self.task.model_dump(mode="json"),
                "normalize_factor": self.normalize_factor,
                "intensity_maps": self.intensity_maps,
            },
            sort_keys=True,
        )
        return {
            "checkpoint_sha256": self.checkpoint_sha256,
            "weights": self.weights,
            "network_hash": hashlib.sha256(network.encode()).hexdigest()[:16],
            "input": self.input,
            "roi_offset": self.roi_offset,
            "roi_shape": self.roi_shape,
            "block_shape": list(self.block_write_roi.shape),
        }

    def write(self, path: Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2))

    @classmethod
    def read(cls, path: str | Path) -> PredictionSpec:
        """Read a spec written by ``write``; a missing or malformed file is a ConfigError."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: prediction worker spec not found")
        try:
            return cls.model_validate_json(path.read_text())
        except ValueError as error:
            first = str(error).splitlines()[0]
            raise ConfigError(f"{path}: not a prediction worker spec ({first})") from None


def parse_roi(text: str, key: str = "--roi") -> Roi:
    """Parse ``OFFSET:SHAPE`` in world units, e.g. ``0,0,0:800,800,800``."""
    parts = text.split(":")
    if len(parts) != 2:
        raise ConfigError(f"{key} {text}: expected OFFSET:SHAPE, e.g. 0,0,0:800,800,800")
    try:
        offset, shape = ([int(v) for v in part.split(",")] for part in parts)
    except ValueError:
        raise ConfigError(
            f"{key} {text}: offset and shape must be comma-separated integers "
            "(world units), e.g. 0,0,0:800,800,800"
        ) from None
    if len(offset) != 3 or len(shape) != 3:
        raise ConfigError(f"{key} {text}: expected 3 values (z, y, x) for offset and shape")
    if any(s <= 0 for s in shape):
        raise ConfigError(f"{key} {text}: the shape must be positive on every axis")
    return Roi(offset, shape)
