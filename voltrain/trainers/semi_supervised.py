"""The semi-supervised trainer: a mean teacher over labeled and unlabeled volumes.

Each step draws a labeled batch (as ``GunpowderTrainer`` does) and an unlabeled batch of
``unlabeled_batch_size`` samples, each a weak and a strong view of one location
(``voltrain.unlabeled``). Order of one step:

1. the teacher (an EMA of the student's weights, no gradient) predicts the weak views;
2. the student runs ONE forward pass over the labeled raw and the strong views, stacked
   along the batch axis (so ``DistributedDataParallel`` sees one forward and backward);
3. the loss is the task's loss on the labeled outputs plus
   ``ramp * (consistency_weight * mse + pseudo_label_weight * pseudo)``: the student's
   outputs on the strong views are brought back to the teacher's frame and channels
   (``voltrain.trainers.consistency``) and compared with the teacher's, over the
   unlabeled mask;
4. the guarded optimizer step (``StepEngine``), then the teacher's EMA update, which the
   device skips when the step was skipped.

Checkpoints hold the teacher; samples derive from (seed, rank, iteration, index), so a
resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from funlib.geometry import Coordinate
from pydantic import Field

from voltrain.config import StrictModel
from voltrain.errors import ConfigError, DataError
from voltrain.faults.data_errors import draw_sample
from voltrain.loader_restart import RestartingLoader
from voltrain.models.base import network_config
from voltrain.nodes.mirror_transpose_augment import MirrorTransposeAugment, resolve_axes
from voltrain.run.snapshot import SnapshotArray
from voltrain.seeding import derive_seed, sample_seed
from voltrain.trainers.base import TrainingBatch
from voltrain.trainers.consistency import (
    SIGMOID_TASKS,
    MeanTeacher,
    align_to_teacher,
    channel_correspondence,
    check_view_transform,
    consistency_loss,
    sigmoid_rampup,
)
from voltrain.trainers.gunpowder import GunpowderTrainer, GunpowderTrainerConfig
from voltrain.trainers.step import StepEngine, StepResult
from voltrain.unlabeled import (
    UnlabeledKeys,
    UnlabeledPipeline,
    compute_unlabeled_sampling_maps,
    open_unlabeled_volumes,
    strong_view_augments,
)

MISSING_UNLABELED = (
    "data.unlabeled: trainer.type semi_supervised needs at least one volume of unlabeled "
    "raw there (raw, optional mask)"
)
# mixed into the seed of unlabeled samples, so they never share a labeled sample's seed
UNLABELED_SEED_STREAM = 0x5E111


class ViewTransformConfig(StrictModel):
    """The geometric transform between an unlabeled sample's two views, undone exactly
    before they are compared (``trainer.view_transform``).

    Attributes:
        enabled: mirror and transpose the strong view (False: same geometry).
        mirror_axes: axes that may be mirrored (None: all).
        transpose_axes: axes permuted among each other (None: all; [1, 2] for anisotropic
            data); they must share input shape and voxel size.
        mirror_probability: probability of mirroring each axis.
    """

    enabled: bool = True
    mirror_axes: list[int] | None = None
    transpose_axes: list[int] | None = None
    mirror_probability: float = Field(0.5, ge=0.0, le=1.0)


class SemiSupervisedTrainerConfig(GunpowderTrainerConfig):
    """Config of the ``SemiSupervisedTrainer`` (``type: semi_supervised``): every key of
    ``gunpowder`` (for the labeled batches), and:

    Attributes:
        unlabeled_batch_size: unlabeled samples per step (next to ``batch_size`` labeled).
        unlabeled_min_masked: the fraction of an unlabeled sample's output region that
            must lie in its mask (or raw's ROI).
        ema_decay: the teacher's EMA decay.
        ema_warmup: use ``min(ema_decay, 1 - 1/(iteration + 1))`` early on.
        consistency_weight: the consistency loss's weight once ramped up.
        consistency_rampup: iterations of the sigmoid ramp of the unlabeled losses (0: none).
        pseudo_label_threshold: also train the student on the teacher's rounded prediction
            where it is at least this sure (binary and affinities tasks; None: no).
        pseudo_label_weight: the pseudo-label loss's weight once ramped up.
        view_transform: the mirror and transposition between the two views.
    """

    type: Literal["semi_supervised"] = "semi_supervised"
    unlabeled_batch_size: int = Field(1, gt=0)
    unlabeled_min_masked: float = Field(0.5, gt=0.0, le=1.0)
    ema_decay: float = Field(0.99, gt=0.0, lt=1.0)
    ema_warmup: bool = True
    consistency_weight: float = Field(1.0, ge=0.0)
    consistency_rampup: int = Field(1000, ge=0)
    pseudo_label_threshold: float | None = Field(None, gt=0.5, lt=1.0)
    pseudo_label_weight: float = Field(1.0, ge=0.0)
    view_transform: ViewTransformConfig = Field(default_factory=ViewTransformConfig)

    def build(self) -> SemiSupervisedTrainer:
        return SemiSupervisedTrainer(self)

    def check_data(self, data) -> None:
        if not data.unlabeled:
            raise ConfigError(MISSING_UNLABELED)


@dataclass
class SemiSupervisedBatch(TrainingBatch):
    """A labeled batch with the unlabeled views of the same step.

    Attributes:
        weak: the teacher's views (n, c, z, y, x); ``strong`` the student's.
        unlabeled_mask: where the teacher's output region is valid (n, z, y, x).
        unlabeled_host: the unlabeled batch on the host (view parameters, placement).
        teacher_logits: the teacher's output, once the step has run.
        student_logits: the student's unlabeled output in the teacher's frame and
            channels, kept for snapshots.
    """

    weak: torch.Tensor | None = None
    strong: torch.Tensor | None = None
    unlabeled_mask: torch.Tensor | None = None
    unlabeled_host: dict | None = None
    teacher_logits: torch.Tensor | None = None
    student_logits: torch.Tensor | None = None


class SemiSupervisedTrainer(GunpowderTrainer):
    """Trains a student on labeled batches and on its consistency with a mean teacher
    over unlabeled ones (see the module docstring).

    Attributes:
        teacher: the ``MeanTeacher``, made from the student at the first step (or
            restored from a checkpoint).
        unlabeled_pipeline: draws the unlabeled samples.
    """

    def __init__(self, config: SemiSupervisedTrainerConfig):
        super().__init__(config)
        self.unlabeled_pipeline: UnlabeledPipeline | None = None
        self.unlabeled_batches: RestartingLoader | None = None
        self.teacher: MeanTeacher | None = None
        self._pending_teacher: dict | None = None
        self.task_config = None

    def build_batch_provider(self, datasets, model, task, snapshot_container=None) -> None:
        """The labeled provider, then the unlabeled one: ``data.unlabeled`` opened and
        checked, the view transform checked against the task's channels."""
        config = self.config
        if not self.unlabeled:
            raise ConfigError(MISSING_UNLABELED)
        model_config = network_config(model)
        if any(f != 1 for f in model_config.output_factor):
            raise ConfigError(
                "model.output_downsample: semi-supervised training needs [1, 1, 1] (the "
                "views are compared voxel for voxel at raw's voxel size)"
            )
        if config.pseudo_label_threshold is not None and task.type not in SIGMOID_TASKS:
            raise ConfigError(
                f"trainer.pseudo_label_threshold: needs a binary or affinities task, not "
                f"'{task.type}'"
            )
        super().build_batch_provider(datasets, model, task, snapshot_container)
        self.task_config = task
        input_shape = Coordinate(config.input_shape)
        output_shape = Coordinate(model_config.output_shape(tuple(input_shape)))
        volumes = open_unlabeled_volumes(self.unlabeled, self.voxel_size)
        for index, volume in enumerate(volumes):
            if volume.raw_channels != self.input_channels:
                raise DataError(
                    f"data.unlabeled[{index}].raw: has {volume.raw_channels} channels, "
                    f"data.train[0].raw has {self.input_channels}; they must be equal"
                )
        raw_input = self.raw_input()
        self.unlabeled_pipeline = UnlabeledPipeline(
            datasets=list(self.unlabeled),
            augments=strong_view_augments(config.augments),
            input_shape=input_shape,
            output_shape=output_shape,
            voxel_size=self.voxel_size,
            sampling_maps=compute_unlabeled_sampling_maps(
                volumes, output_shape, config.unlabeled_min_masked
            ),
            view_transform=self._view_transform(task),
            normalize_factor=raw_input.normalize_factor,
            intensity_maps=list(raw_input.intensity_maps),
            max_attempts=config.max_sampling_attempts,
            chunk_cache_mb=config.chunk_cache_mb,
        )
        self.unlabeled_pipeline.check_view_transform()

    def _view_transform(self, task) -> MirrorTransposeAugment | None:
        view = self.config.view_transform
        if not view.enabled:
            return None
        transform = MirrorTransposeAugment(
            [UnlabeledKeys().strong],
            view.mirror_axes,
            view.transpose_axes,
            view.mirror_probability,
        )
        mirror_axes = resolve_axes(view.mirror_axes, 3, "trainer.view_transform.mirror_axes")
        transpose_axes = resolve_axes(
            view.transpose_axes, 3, "trainer.view_transform.transpose_axes"
        )
        check_view_transform(task, mirror_axes, transpose_axes)
        return transform

    def check_first_sample(self, start_iteration: int) -> None:
        """The labeled check, and the first unlabeled sample drawn too."""
        super().check_first_sample(start_iteration)
        pipeline = self.unlabeled_pipeline
        seed = sample_seed(self._unlabeled_seed(), start_iteration, 0, self.rank)
        draw_sample(pipeline, seed, self.config.on_data_error, pipeline.max_attempts)
        if self.config.num_data_fetchers > 0:
            pipeline.teardown()

    def _unlabeled_seed(self) -> int:
        return derive_seed(self.config.seed, UNLABELED_SEED_STREAM)

    def unlabeled_loader(self, start_iteration: int, pin_memory: bool = False):
        """The loader of this rank's unlabeled batches from iteration ``start + 1`` on,
        seeded like the labeled one but from a stream of its own."""
        return self._make_loader(
            self.unlabeled_pipeline,
            self._unlabeled_seed(),
            self.config.unlabeled_batch_size,
            start_iteration,
            pin_memory,
        )

    def _stop_loader(self) -> None:
        try:
            super()._stop_loader()
        finally:
            if self.unlabeled_batches is not None:
                self.unlabeled_batches.close()

    def _draw_batch(self, device: torch.device) -> SemiSupervisedBatch:
        labeled = super()._draw_batch(device)
        if self.unlabeled_batches is None:
            self.unlabeled_batches = self._restarting(self.unlabeled_loader, device)
        host = self._read_batch(self.unlabeled_batches)
        weak, strong, mask = (
            host[key].to(device, non_blocking=True) for key in ("raw", "strong", "mask")
        )
        return SemiSupervisedBatch(
            labeled.raw,
            labeled.target,
            labeled.weight,
            host=labeled.host,
            weak=weak,
            strong=strong,
            unlabeled_mask=mask,
            unlabeled_host=host,
        )

    def _teacher_of(self, model: torch.nn.Module) -> MeanTeacher:
        if self.teacher is None:
            config = self.config
            self.teacher = MeanTeacher(model, config.ema_decay, config.ema_warmup)
            if self._pending_teacher is not None:
                self.teacher.load_state_dict(self._pending_teacher)
                self._pending_teacher = None
        return self.teacher

    def _step(
        self, engine: StepEngine, batch: SemiSupervisedBatch, snapshot_due: bool
    ) -> StepResult:
        config = self.config
        teacher = self._teacher_of(engine.model)
        batch.teacher_logits = teacher.predict(batch.weak, engine.autocast)
        ramp = sigmoid_rampup(self.iteration, config.consistency_rampup)
        labeled = batch.raw.shape[0]

        figures = {}

        def unlabeled_loss(logits: torch.Tensor) -> torch.Tensor:
            mse, pseudo = self._consistency(logits[labeled:], batch, snapshot_due)
            figures.update(consistency_loss=mse.detach(), pseudo_label_loss=pseudo.detach())
            return ramp * (config.consistency_weight * mse + config.pseudo_label_weight * pseudo)

        raw = torch.cat([batch.raw, batch.strong])
        result = engine.step(
            self.task,
            raw,
            batch.target,
            batch.weight,
            self.iteration,
            snapshot_due,
            extra_loss=unlabeled_loss,
        )
        teacher.update(engine.model, result.finite, self.iteration)
        result.figures.update(figures, consistency_ramp=torch.tensor(ramp))
        return result

    def _consistency(self, student: torch.Tensor, batch: SemiSupervisedBatch, keep: bool):
        """The consistency and pseudo-label losses of the student's unlabeled outputs."""
        mirrors = batch.unlabeled_host["mirror"].tolist()
        transposes = batch.unlabeled_host["transpose"].tolist()
        aligned, weights = [], []
        for index, (mirror, transpose) in enumerate(zip(mirrors, transposes, strict=True)):
            channels = channel_correspondence(self.task_config, mirror, transpose)
            logits, valid = align_to_teacher(student[index], channels, mirror, transpose)
            aligned.append(logits)
            weights.append(valid * batch.unlabeled_mask[index])
        aligned = torch.stack(aligned)
        if keep:
            batch.student_logits = aligned.detach()
        return consistency_loss(
            self.task,
            aligned,
            batch.teacher_logits,
            torch.stack(weights),
            self.config.pseudo_label_threshold,
        )

    def snapshot_arrays(self, batch: SemiSupervisedBatch, result: StepResult) -> dict:
        """The labeled arrays, and the first unlabeled sample's: its two views, its mask,
        the teacher's prediction and the student's (brought to the teacher's frame)."""
        arrays = super().snapshot_arrays(batch, result)
        host = batch.unlabeled_host
        voxel_size = host["voxel_size"][0].tolist()
        raw_offset = host["raw_offset"][0].tolist()
        out_offset = host["output_offset"][0].tolist()

        def image(tensor: torch.Tensor, offset) -> SnapshotArray:
            data = tensor[0] if tensor.shape[0] == 1 else tensor
            return SnapshotArray(data.detach().float().cpu().numpy(), offset, voxel_size)

        arrays["unlabeled_weak"] = image(batch.weak[0], raw_offset)
        # the strong view in the student's frame: mirrored and transposed about its centre
        arrays["unlabeled_strong"] = image(batch.strong[0], raw_offset)
        arrays["unlabeled_mask"] = image(host["mask"][:1], out_offset)
        teacher = self.task.activation(batch.teacher_logits[:1])[0]
        arrays["teacher_prediction"] = image(teacher, out_offset)
        student = self.task.activation(batch.student_logits[:1])[0]
        arrays["student_prediction"] = image(student, out_offset)
        return arrays

    def state_dict(self) -> dict:
        state = super().state_dict()
        teacher = self.teacher.state_dict() if self.teacher is not None else None
        state["teacher"] = teacher if teacher is not None else self._pending_teacher
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        teacher = state.get("teacher")
        if teacher is None:
            # saved before any step: the next step makes the teacher from the student
            self.teacher, self._pending_teacher = None, None
        elif self.teacher is not None:
            self.teacher.load_state_dict(teacher)
        else:
            self._pending_teacher = teacher
