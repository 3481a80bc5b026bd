"""The gunpowder trainer: batches from a gunpowder graph over zarr volumes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from funlib.geometry import Coordinate
from pydantic import Field, SerializeAsAny, field_validator
from torch.utils.data import DataLoader

from voltrain.augments.base import AugmentConfig, parse_augment
from voltrain.data import DatasetConfig
from voltrain.errors import VoltrainError, recover_voltrain_error
from voltrain.loader import make_loader
from voltrain.nodes.torch_deform import deform_raw
from voltrain.pipeline import (
    DEFAULT_CHUNK_CACHE_MB,
    TrainingPipeline,
    compute_sampling_maps,
    open_training_volumes,
)
from voltrain.profiling import StageProfile, profiling_enabled
from voltrain.trainers.base import Trainer, TrainingBatch
from voltrain.trainers.blockwise_validation import BlockwiseValidator
from voltrain.trainers.config import TrainerConfig
from voltrain.trainers.snapshot import SnapshotArray, write_snapshot
from voltrain.trainers.step import StepResult
from voltrain.trainers.validation import Validator


class GunpowderTrainerConfig(TrainerConfig):
    """Config of the ``GunpowderTrainer``.

    Attributes:
        num_data_fetchers: loader worker processes (0 draws samples in the training process).
        augments: augment configs, applied in this order; each selected by its ``type``.
        snapshot_interval: write a snapshot every this many iterations (0: never).
        min_masked: minimum fraction of each sample's output region that is masked, judged
            after augmentation.
        max_sampling_attempts: samples drawn for one batch entry before giving up.
        clip_raw: read raw only within the gt ROI plus the network's context.
        normalize_factor: multiply raw by this (default: 1/255 for uint8, 1/65535 for uint16).
        data_timeout: seconds to wait for one batch from the loader before failing.
        fuse_augments: run an elastic augment and the mirror/transpose, intensity and noise
            augments that follow it as one resampling pass (same result, several times
            faster).
        chunk_cache_mb: MiB of decoded zarr chunks each loader worker keeps (0: none).
        deform_on_device: resample raw on the training device (a GPU) instead of in the
            loader workers, which then only read and crop.
    """

    type: Literal["gunpowder"] = "gunpowder"
    num_data_fetchers: int = Field(2, ge=0)
    augments: list[SerializeAsAny[AugmentConfig]] = Field(default_factory=list)
    snapshot_interval: int = Field(1000, ge=0)
    min_masked: float = Field(0.0, ge=0.0, le=1.0)
    max_sampling_attempts: int = Field(100, gt=0)
    clip_raw: bool = True
    normalize_factor: float | None = Field(None, gt=0)
    data_timeout: float = Field(600.0, gt=0)
    fuse_augments: bool = True
    chunk_cache_mb: float = Field(DEFAULT_CHUNK_CACHE_MB, ge=0)
    deform_on_device: bool = False

    @field_validator("augments", mode="before")
    @classmethod
    def _parse_augments(cls, value: Any) -> list[AugmentConfig]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError("must be a list of augments, each with a 'type'")
        return [parse_augment(item, f"trainer.augments[{i}]") for i, item in enumerate(value)]

    def build(self) -> GunpowderTrainer:
        return GunpowderTrainer(self)


class GunpowderTrainer(Trainer):
    """Trains on batches drawn by a multiprocess loader from a gunpowder graph.

    Attributes:
        voxel_size: the training data's voxel size (known once the provider is built).
    """

    def __init__(self, config: GunpowderTrainerConfig):
        super().__init__(config)
        self.voxel_size: Coordinate | None = None
        self.pipeline: TrainingPipeline | None = None
        self.snapshot_container: Path | None = None
        self._loader_iterator = None
        self._loader_iteration: int | None = None
        self.stage_profile = StageProfile() if profiling_enabled() else None

    def can_train(self, datasets: Sequence[DatasetConfig]) -> bool:
        return len(datasets) > 0 and all(d.raw and d.gt for d in datasets)

    def _pipeline_for(self, datasets, model, task, augments, key: str) -> TrainingPipeline:
        config = self.config
        input_shape = Coordinate(config.input_shape)
        output_shape = Coordinate(model.output_shape(tuple(input_shape)))
        volumes = open_training_volumes(datasets, output_shape, key)
        if key == "data.train":
            self.voxel_size = volumes[0].voxel_size
        sampling_maps = compute_sampling_maps(volumes, output_shape, config.min_masked)
        return TrainingPipeline(
            datasets=list(datasets),
            augments=list(augments),
            task=task,
            input_shape=input_shape,
            output_shape=output_shape,
            min_masked=config.min_masked,
            clip_raw=config.clip_raw,
            sampling_maps=sampling_maps,
            max_attempts=config.max_sampling_attempts,
            normalize_factor=config.normalize_factor,
            fuse_augments=config.fuse_augments,
            chunk_cache_mb=config.chunk_cache_mb,
            deform_on_device=config.deform_on_device and key == "data.train",
        )

    def build_batch_provider(self, datasets, model, task, snapshot_container=None) -> None:
        """Open and check the datasets, find where samples can go, and prepare the graph.

        Raises ``DataError`` or ``SamplingError`` (naming the dataset) before any training.
        """
        self.pipeline = self._pipeline_for(
            datasets, model, task, self.config.augments, "data.train"
        )
        self.task = task.build()
        self.snapshot_container = Path(snapshot_container) if snapshot_container else None

    def fixed_intensity_maps(self) -> list[AugmentConfig]:
        """The ``intensity_scale_shift`` augments with ``p: 1``: part of what the network
        sees on every sample, so validation applies them too."""
        return [a for a in self.config.augments if a.type == "intensity_scale_shift" and a.p >= 1]

    def build_validation_provider(self, datasets, model, task, device) -> None:
        """Validate every ``validation_interval`` iterations on ``datasets``: on
        ``validation_samples`` fixed samples (no augments but the fixed intensity maps), or
        over their whole gt ROIs block by block (``validation.mode: blockwise``). Checks the
        data like ``build_batch_provider``.
        """
        maps = self.fixed_intensity_maps()
        if self.config.validation.mode == "blockwise":
            input_shape = Coordinate(self.config.input_shape)
            output_shape = Coordinate(model.output_shape(tuple(input_shape)))
            self.validator = BlockwiseValidator(
                open_training_volumes(datasets, output_shape, "data.validate"),
                task.build(),
                input_shape,
                output_shape,
                self.config.normalize_factor,
                [(a.scale, a.shift) for a in maps],
                device,
                self._segmentation_scorer(task),
            )
            return
        pipeline = self._pipeline_for(datasets, model, task, maps, "data.validate")
        self.validator = Validator(
            pipeline,
            task.build(),
            self.config.seed,
            self.config.validation_samples,
            self.batch_size,
            device,
        )

    def _segmentation_scorer(self, task):
        """The scorer of ``validation.metric: voi`` or ``arand``, else None."""
        validation = self.config.validation
        if not validation.by_segmentation:
            return None
        from voltrain.segment.validation import SegmentationScorer

        return SegmentationScorer(task.neighborhood, validation.thresholds, validation.metric)

    def __enter__(self) -> GunpowderTrainer:
        if self.pipeline is None:
            raise RuntimeError("call build_batch_provider() before starting the trainer")
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        try:
            super().__exit__(exc_type, exc_value, traceback)
        finally:
            self._stop_loader()

    def _stop_loader(self) -> None:
        if self._loader_iterator is not None:
            shutdown = getattr(self._loader_iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            self._loader_iterator = None
            self._loader_iteration = None

    def loader(self, start_iteration: int, pin_memory: bool = False) -> DataLoader:
        """The loader of this rank's batches from iteration ``start_iteration + 1`` on.

        Sample i of iteration n is drawn with the seed ``sample_seed(seed, n, i, rank)``,
        so ranks never draw the same samples and a resumed run draws what it would have.
        """
        return make_loader(
            self.pipeline,
            seed=self.config.seed,
            batch_size=self.batch_size,
            start_iteration=start_iteration,
            num_workers=self.config.num_data_fetchers,
            pin_memory=pin_memory,
            timeout=self.config.data_timeout,
            rank=self.rank,
        )

    def _next_batch(self, device: torch.device) -> dict:
        if self._loader_iterator is None or self._loader_iteration != self.iteration:
            self._stop_loader()
            loader = self.loader(self.iteration, pin_memory=device.type == "cuda")
            self._loader_iterator = iter(loader)
            self._loader_iteration = self.iteration
        try:
            batch = next(self._loader_iterator)
        except VoltrainError as error:
            # A worker's error arrives with the worker's traceback as its message.
            raise (recover_voltrain_error(error) or error) from None
        except RuntimeError as error:
            if "timed out" in str(error):
                raise VoltrainError(
                    f"no batch from the data loader within trainer.data_timeout="
                    f"{self.config.data_timeout:g} s at iteration {self.iteration}"
                ) from None
            raise
        self._loader_iteration += 1
        if self.stage_profile is not None and "stage_ms" in batch:
            self.stage_profile.add(batch["stage_ms"].numpy())
        return batch

    def _draw_batch(self, device: torch.device) -> TrainingBatch:
        batch = self._next_batch(device)
        target, weight = (batch[key].to(device, non_blocking=True) for key in ("target", "weight"))
        if "raw_map" in batch:  # deform_on_device: the workers left raw's resampling to us
            raw = deform_raw(
                batch["raw_source"].to(device, non_blocking=True),
                batch["raw_map"].to(device, non_blocking=True),
            )
        else:
            raw = batch["raw"].to(device, non_blocking=True)
        return TrainingBatch(raw, target, weight, host=batch)

    def _snapshot_due(self, iteration: int) -> bool:
        interval = self.config.snapshot_interval
        return self.snapshot_container is not None and interval > 0 and iteration % interval == 0

    def _write_snapshot(self, batch: TrainingBatch, result: StepResult) -> None:
        host = batch.host
        voxel_size = host["voxel_size"][0].tolist()
        raw_offset = host["raw_offset"][0].tolist()
        out_offset = host["output_offset"][0].tolist()
        prediction = self.task.activation(result.logits[:1].float())[0]

        def at_output(tensor) -> SnapshotArray:
            return SnapshotArray(tensor.detach().cpu().numpy(), out_offset, voxel_size)

        arrays = {
            "raw": SnapshotArray(batch.raw[0, 0].cpu().numpy(), raw_offset, voxel_size),
            "gt": at_output(host["gt"][0]),
            "mask": at_output(host["mask"][0]),
            "target": at_output(host["target"][0]),
            "weight": at_output(host["weight"][0]),
            "prediction": at_output(prediction),
            "gradient": at_output(result.logits_grad[0].float()),
        }
        path = write_snapshot(self.snapshot_container, self.iteration, arrays)
        self.notify_snapshot(self.iteration, path, {k: a.data for k, a in arrays.items()})
