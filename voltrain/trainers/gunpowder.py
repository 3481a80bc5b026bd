"""The gunpowder trainer: batches from a gunpowder graph over zarr volumes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from funlib.geometry import Coordinate
from pydantic import Field, SerializeAsAny, field_validator
from torch.utils.data import DataLoader

from voltrain.augments.base import AugmentConfig, parse_augments
from voltrain.data import DatasetConfig, open_array, raw_channels
from voltrain.errors import ConfigError, VoltrainError, recover_voltrain_error
from voltrain.faults.data_errors import draw_sample
from voltrain.inference import InputConfig, IntensityMap
from voltrain.io.write import source_units
from voltrain.kernels.torch_deform import deform_raw
from voltrain.loader import make_loader
from voltrain.loader_restart import RestartingLoader
from voltrain.models.base import network_config
from voltrain.pipeline import (
    DEFAULT_CHUNK_CACHE_MB,
    TrainingPipeline,
    check_deform_on_device,
    compute_sampling_maps,
    open_training_volumes,
)
from voltrain.profiling import StageProfile, profiling_enabled
from voltrain.run.snapshot import SnapshotArray, SnapshotSchedule
from voltrain.seeding import sample_seed
from voltrain.trainers.base import Trainer, TrainingBatch
from voltrain.trainers.config import TrainerConfig
from voltrain.trainers.step import StepResult
from voltrain.validation.blockwise import BlockwiseValidator
from voltrain.validation.samples import Validator

logger = logging.getLogger(__name__)


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
        normalize_factor: the older spelling of ``input.normalize_factor`` (still read).
        data_timeout: seconds to wait for one batch from the loader before failing.
        fuse_augments: run an elastic augment and the mirror/transpose, intensity and noise
            augments that follow it as one resampling pass (same result, several times
            faster).
        chunk_cache_mb: MiB of decoded zarr chunks each loader worker keeps (0: none).
        deform_on_device: resample raw on the training device (a GPU) instead of in the
            loader workers, which then only read and crop.
        on_data_error: ``fail`` stops at an unreadable chunk; ``skip`` draws the sample
            again with a derived seed and counts it (``data_errors`` in metrics.jsonl).
        loader_restarts: times a loader whose worker died is restarted (from the current
            iteration, with the same batches) before the run gives up.
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
    on_data_error: Literal["fail", "skip"] = "fail"
    loader_restarts: int = Field(3, ge=0)

    @field_validator("augments", mode="before")
    @classmethod
    def _parse_augments(cls, value: Any) -> list[AugmentConfig]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError("must be a list of augments, each with a 'type'")
        return parse_augments(value)

    def build(self) -> GunpowderTrainer:
        return GunpowderTrainer(self)

    def legacy_input(self, warn: bool = False) -> InputConfig:
        """``normalize_factor`` and the ``intensity_scale_shift`` augments with ``p: 1``:
        part of what the network sees on every sample, so validation and prediction apply
        them too (maps with ``p < 1`` are augments, and are not)."""
        maps = []
        for index, augment in enumerate(self.augments):
            if augment.type != "intensity_scale_shift":
                continue
            if augment.p >= 1:
                maps.append(IntensityMap(scale=augment.scale, shift=augment.shift))
            elif warn:
                logger.warning(
                    "trainer.augments[%d]: intensity_scale_shift with p=%s is not applied at "
                    "validation or prediction (only p=1 maps are)",
                    index,
                    augment.p,
                )
        return InputConfig(normalize_factor=self.normalize_factor, intensity_maps=maps)

    def check_input(self, input_config: InputConfig) -> None:
        if input_config.intensity_maps and self.deform_on_device:
            raise ConfigError(
                "input.intensity_maps: not applied with trainer.deform_on_device (raw is "
                "resampled on the training device); use an intensity_scale_shift augment"
            )

    def verify(self) -> tuple[bool, str]:
        """The base checks, and that ``deform_on_device`` has augments it can run."""
        ok, message = super().verify()
        if ok and self.deform_on_device:
            check_deform_on_device(self.augments, self.fuse_augments)
        return ok, message

    def input_channels(self, datasets: Sequence[DatasetConfig]) -> int:
        """Raw's channel count in ``data.train[0]`` (metadata only): the network's input
        channels follow the data; ``build_batch_provider`` checks the other datasets."""
        raw = open_array(datasets[0].raw, "data.train[0].raw", channels=True)
        return raw_channels(raw)


class GunpowderTrainer(Trainer):
    """Trains on batches drawn by a multiprocess loader from a gunpowder graph.

    Attributes:
        voxel_size: the training raw's voxel size, the network's input voxel size (known
            once the provider is built); gt's may be coarser (``model.output_downsample``).
        units: its units (OME names; None: none given), which snapshots carry.
        input_channels: raw's channel count, known with ``voxel_size``.
    """

    can_validate = True

    def __init__(self, config: GunpowderTrainerConfig):
        super().__init__(config)
        self.input_channels: int | None = None
        self.pipeline: TrainingPipeline | None = None
        self.snapshot_container: Path | None = None
        # the loader of training batches, restarted when a worker dies
        self.batches: RestartingLoader | None = None
        if profiling_enabled():
            self.stage_profile = StageProfile()

    def can_train(self, datasets: Sequence[DatasetConfig]) -> bool:
        return len(datasets) > 0 and all(d.raw and d.gt for d in datasets)

    def _pipeline_for(self, datasets, model, task, augments, maps, key: str) -> TrainingPipeline:
        config = self.config
        input_shape = Coordinate(config.input_shape)
        model_config = network_config(model)
        output_shape = Coordinate(model_config.output_shape(tuple(input_shape)))
        volumes = open_training_volumes(datasets, output_shape, key, model_config)
        if key == "data.train":
            self.voxel_size = volumes[0].raw_voxel_size
            self.units = source_units(volumes[0].gt, "data.train[0].gt")
            self.input_channels = volumes[0].raw_channels
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
            normalize_factor=self.raw_input().normalize_factor,
            intensity_maps=list(maps),
            fuse_augments=config.fuse_augments,
            chunk_cache_mb=config.chunk_cache_mb,
            deform_on_device=config.deform_on_device and key == "data.train",
        )

    def build_batch_provider(self, datasets, model, task, snapshot_container=None) -> None:
        """Open and check the datasets, find where samples can go, and prepare the graph.

        Raises ``DataError`` or ``SamplingError`` (naming the dataset) before any training.
        """
        maps = self.input.intensity_maps  # the older p: 1 maps are among the augments
        self.pipeline = self._pipeline_for(
            datasets, model, task, self.config.augments, maps, "data.train"
        )
        self.task = task.build()
        self.snapshot_container = Path(snapshot_container) if snapshot_container else None
        interval = self.config.snapshot_interval
        if self.snapshot_container is not None and interval > 0:
            self.add_callback(SnapshotSchedule(self.snapshot_container, interval))

    def check_first_sample(self, start_iteration: int) -> None:
        """Draw the first sample of the run here, so that a ``min_masked`` that only fails
        after augmentation, or unreadable data, is reported before the run directory is
        written. Without loader workers the graph built here is the one that trains."""
        seed = sample_seed(self.config.seed, start_iteration, 0, self.rank)
        draw_sample(self.pipeline, seed, self.config.on_data_error, self.pipeline.max_attempts)
        if self.config.num_data_fetchers > 0:
            self.pipeline.teardown()

    def build_validation_provider(self, datasets, model, task, device) -> None:
        """Validate every ``validation_interval`` iterations on ``datasets``: on
        ``validation_samples`` fixed samples (no augments, but the fixed maps of
        ``raw_input()``), or
        over their whole gt ROIs block by block (``validation.mode: blockwise``). Checks the
        data like ``build_batch_provider``.
        """
        raw_input = self.raw_input()
        if self.config.validation.mode == "blockwise":
            input_shape = Coordinate(self.config.input_shape)
            model_config = network_config(model)
            output_shape = Coordinate(model_config.output_shape(tuple(input_shape)))
            self.validator = BlockwiseValidator(
                open_training_volumes(datasets, output_shape, "data.validate", model_config),
                task.build(),
                input_shape,
                output_shape,
                raw_input,
                device,
                self._segmentation_scorer(task),
            )
            return
        maps = raw_input.intensity_maps
        pipeline = self._pipeline_for(datasets, model, task, [], maps, "data.validate")
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

        return SegmentationScorer(
            task.neighborhood,
            validation.thresholds,
            validation.metric,
            self.segment,
            channels=task.affinity_channels(),
        )

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
        if self.batches is not None:
            self.batches.close()

    def loader(self, start_iteration: int, pin_memory: bool = False) -> DataLoader:
        """The loader of this rank's batches from iteration ``start_iteration + 1`` on.

        Sample i of iteration n is drawn with the seed ``sample_seed(seed, n, i, rank)``,
        so ranks never draw the same samples and a resumed run draws what it would have.
        """
        return self._make_loader(
            self.pipeline, self.config.seed, self.batch_size, start_iteration, pin_memory
        )

    def _make_loader(
        self, pipeline, seed: int, batch_size: int, start_iteration: int, pin_memory: bool
    ) -> DataLoader:
        """This rank's batches of ``pipeline`` from iteration ``start_iteration + 1`` on, with
        the config's workers, timeout and data-error policy."""
        config = self.config
        return make_loader(
            pipeline,
            seed=seed,
            batch_size=batch_size,
            start_iteration=start_iteration,
            num_workers=config.num_data_fetchers,
            pin_memory=pin_memory,
            timeout=config.data_timeout,
            rank=self.rank,
            on_data_error=config.on_data_error,
        )

    def _restarting(
        self, loader: Callable[[int, bool], DataLoader], device: torch.device
    ) -> RestartingLoader:
        """``loader(start_iteration, pin_memory)``, restarted when a worker dies."""
        pin_memory = device.type == "cuda"
        return RestartingLoader(
            lambda start: loader(start, pin_memory), self.config.loader_restarts
        )

    def _next_batch(self, device: torch.device) -> dict:
        if self.batches is None:
            self.batches = self._restarting(self.loader, device)
        return self._read_batch(self.batches)

    def _read_batch(self, batches: RestartingLoader) -> dict:
        """The next batch of ``batches``, with the loader's errors as one-line errors."""
        try:
            batch = batches.next_batch(self.iteration)
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
        if "data_errors" in batch:
            self.data_errors += int(batch["data_errors"].sum())
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

    def snapshot_arrays(self, batch: TrainingBatch, result: StepResult) -> dict[str, SnapshotArray]:
        host = batch.host
        voxel_size = host["voxel_size"][0].tolist()
        raw_voxel_size = host["raw_voxel_size"][0].tolist()
        raw_offset = host["raw_offset"][0].tolist()
        out_offset = host["output_offset"][0].tolist()
        prediction = self.task.activation(result.logits[:1].float())[0]

        def at_output(tensor) -> SnapshotArray:
            return SnapshotArray(tensor.detach().cpu().numpy(), out_offset, voxel_size)

        # single-channel raw is stored (z, y, x), as it was read; several keep their axis
        raw = batch.raw[0, 0] if batch.raw.shape[1] == 1 else batch.raw[0]
        return {
            "raw": SnapshotArray(raw.cpu().numpy(), raw_offset, raw_voxel_size),
            "gt": at_output(host["gt"][0]),
            "mask": at_output(host["mask"][0]),
            "target": at_output(host["target"][0]),
            "weight": at_output(host["weight"][0]),
            "prediction": at_output(prediction),
            "gradient": at_output(result.logits_grad[0].float()),
        }
