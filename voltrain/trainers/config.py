"""``TrainerConfig``: the ``trainer`` section of the experiment YAML, shared by every trainer."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from voltrain.callbacks import EarlyStoppingConfig
from voltrain.config import StrictModel
from voltrain.errors import ConfigError
from voltrain.inference import InputConfig
from voltrain.optim import (
    AdamConfig,
    ConstantScheduleConfig,
    LRScheduleConfigs,
    OptimizerConfigs,
)
from voltrain.trainers.gradients import ClippingConfig, GradientNoiseConfig

DEFAULT_MAX_STEPS = 1000
SEGMENTATION_KEYS = (
    "validation_voi",
    "validation_voi_split",
    "validation_voi_merge",
    "validation_arand",
)


class ValidationConfig(StrictModel):
    """How the model is validated on ``data.validate`` (``trainer.validation``).

    Attributes:
        mode: ``samples`` scores ``validation_samples`` fixed samples; ``blockwise`` scores
            the whole gt ROI of every validation dataset, predicted block by block as
            ``voltrain predict`` does.
        metric: the result that picks ``best.pt``: ``validation_loss`` or a metric of the
            task (``dice`` or ``accuracy`` for binary, ``affinity_accuracy`` for
            affinities), with or without the ``validation_`` prefix.
            With ``mode: blockwise`` and an affinities task, also ``voi`` or ``arand``
            (and ``voi_split``, ``voi_merge``): the predictions are segmented at every
            threshold of ``thresholds`` and the best threshold's scores reported.
        best: whether ``min`` or ``max`` of ``metric`` is best (default: min for the loss,
            errors (``*_mse``) and the segmentation scores, max for the task's other
            metrics).
        thresholds: merge thresholds swept when segmenting for ``voi`` or ``arand``.
    """

    mode: Literal["samples", "blockwise"] = "samples"
    metric: str = "validation_loss"
    best: Literal["min", "max"] | None = None
    thresholds: list[float] = Field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])

    @field_validator("thresholds")
    @classmethod
    def _check_thresholds(cls, thresholds: list[float]) -> list[float]:
        from voltrain.segment.config import check_thresholds

        return check_thresholds(thresholds)

    @property
    def by_segmentation(self) -> bool:
        """Whether ``metric`` is a score of segmented predictions (VOI, ARAND)."""
        return self.metric_key in SEGMENTATION_KEYS

    @property
    def metric_key(self) -> str:
        """``metric`` as its key in the validation results, e.g. ``validation_dice``."""
        if self.metric.startswith("validation_"):
            return self.metric
        return f"validation_{self.metric}"

    @property
    def best_mode(self) -> Literal["min", "max"]:
        if self.best is not None:
            return self.best
        lower_is_better = self.metric_key == "validation_loss" or self.metric_key.endswith("_mse")
        return "min" if lower_is_better or self.by_segmentation else "max"


class TrainerConfig(StrictModel):
    """Base of every trainer config: what all trainers share.

    Attributes:
        type: which trainer (selects the config class in YAML).
        batch_size: samples per iteration.
        learning_rate: the optimizer's (peak) learning rate.
        input_shape: network input in voxels (z, y, x).
        seed: seeds the model's initial weights, every sample and the gradient noise.
        steps: train this many iterations more than the run starts from (relative).
        max_steps: train up to this iteration (absolute). Neither: max_steps 1000.
        optimizer: ``adam``, ``adamw``, ``radam`` or ``sgd`` and their parameters.
        lr_schedule: ``constant``, ``cosine``, ``poly`` or ``step``, with optional warm-up.
        clipping: gradient clipping mode and limits.
        gradient_multipliers: parameter-name pattern -> factor for its gradients.
        gradient_noise: Gaussian gradient noise (None: none).
        amp: mixed precision: ``none``, ``bf16`` (autocast) or ``fp16`` (autocast with loss
            scaling).
        fail_on_nan_loss: stop with an error when a step is not finite (True), or skip such
            steps and count them (False). Either way a non-finite step is never applied.
        log_every: read the loss back and log it every this many iterations.
        checkpoint_interval: save a checkpoint every this many iterations (0: only at the end).
        checkpoint_seconds: also save one whenever this many seconds have passed (None: no).
        keep_checkpoint_max: keep only the newest this many checkpoints (0: all); the best
            checkpoint is kept apart and never removed.
        weights_from: initialise the model from this checkpoint file, or from the latest
            checkpoint of this run directory (only when not resuming).
        validation_interval: validate every this many iterations (0: never); needs
            ``data.validate``.
        validation_samples: the fixed number of validation samples (``samples`` mode).
        validation: the validation mode and the metric that picks the best checkpoint.
        early_stopping: stop when a validation metric stops improving (None: never).
        time_limit: stop training after this many seconds (None: no limit).
        peer_timeout: under torchrun, seconds to wait for the other ranks to join before
            giving up with an error.
    """

    type: str
    batch_size: int = Field(1, gt=0)
    learning_rate: float = Field(1e-4, gt=0)
    input_shape: list[int] = Field(default_factory=lambda: [68, 68, 68])
    seed: int = Field(0, ge=0)
    steps: int | None = Field(None, gt=0)
    max_steps: int | None = Field(None, gt=0)
    optimizer: OptimizerConfigs = Field(default_factory=AdamConfig)
    lr_schedule: LRScheduleConfigs = Field(default_factory=ConstantScheduleConfig)
    clipping: ClippingConfig = Field(default_factory=ClippingConfig)
    gradient_multipliers: dict[str, float] = Field(default_factory=dict)
    gradient_noise: GradientNoiseConfig | None = None
    amp: Literal["none", "bf16", "fp16"] = "none"
    fail_on_nan_loss: bool = True
    log_every: int = Field(10, gt=0)
    checkpoint_interval: int = Field(500, ge=0)
    checkpoint_seconds: float | None = Field(None, gt=0)
    keep_checkpoint_max: int = Field(0, ge=0)
    weights_from: str | None = None
    validation_interval: int = Field(1000, ge=0)
    validation_samples: int = Field(8, gt=0)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    early_stopping: EarlyStoppingConfig | None = None
    time_limit: float | None = Field(None, gt=0)
    peer_timeout: float = Field(300.0, gt=0)

    @field_validator("input_shape")
    @classmethod
    def _three_positive(cls, value: list[int]) -> list[int]:
        if len(value) != 3 or any(v <= 0 for v in value):
            raise ValueError(f"must be three positive voxel counts (z, y, x), got {value}")
        return value

    @field_validator("gradient_multipliers")
    @classmethod
    def _finite_factors(cls, value: dict[str, float]) -> dict[str, float]:
        for pattern, factor in value.items():
            if not math.isfinite(factor) or factor < 0:
                raise ValueError(f"'{pattern}': factor must be finite and >= 0, got {factor}")
        return value

    def legacy_input(self, warn: bool = False) -> InputConfig:
        """What this section says about the network's input in the older spelling, before
        the experiment's ``input`` section existed (see ``voltrain.inference.merge_input``);
        ``warn`` logs what of it validation and prediction leave out.
        """
        return InputConfig()

    def check_input(self, input_config: InputConfig) -> None:
        """``ConfigError`` if this trainer cannot feed the network as ``input`` says."""

    def check_data(self, data) -> None:
        """``ConfigError`` if this trainer cannot use the ``data`` section (a
        ``voltrain.data.DataConfig``) as given; checked with the config, before any data is
        opened."""
        if data.unlabeled:
            raise ConfigError(
                f"data.unlabeled: only trainer.type: semi_supervised trains on unlabeled raw; "
                f"trainer.type is '{self.type}'"
            )

    def input_channels(self, datasets: list) -> int:
        """The network's input channels for training on ``datasets`` (1 unless the
        trainer reads data whose raw has channels)."""
        return 1

    def target_iteration(self, start: int) -> int:
        """The iteration a run that starts at ``start`` trains up to."""
        if self.max_steps is not None:
            return self.max_steps
        if self.steps is not None:
            return start + self.steps
        return DEFAULT_MAX_STEPS

    def check_schedule(self, horizon: int) -> tuple[bool, str]:
        """Whether the warm-up ends before ``horizon`` (the iteration training ends at)."""
        schedule = self.lr_schedule
        end = schedule.total_iterations or horizon
        if schedule.warmup_iterations and schedule.warmup_iterations >= end:
            key = "lr_schedule.total_iterations" if schedule.total_iterations else "training"
            hint = (
                ""
                if schedule.total_iterations
                else ("; set trainer.lr_schedule.total_iterations to plan beyond this run")
            )
            return False, (
                f"trainer.lr_schedule.warmup_iterations ({schedule.warmup_iterations}) must be "
                f"shorter than {key} ({end} iterations){hint}"
            )
        return True, "ok"

    def verify(self) -> tuple[bool, str]:
        """Check the config for combinations the field validators cannot see."""
        norm_type = self.clipping.norm_type
        if norm_type != math.inf and norm_type < 1:
            return False, f"trainer.clipping.norm_type must be >= 1 or inf, got {norm_type}"
        if self.steps is not None and self.max_steps is not None:
            return False, (
                "trainer.steps and trainer.max_steps: give one (steps counts from where a run "
                "starts, max_steps is the iteration to train up to)"
            )
        if self.steps is None:
            ok, message = self.check_schedule(self.target_iteration(0))
            if not ok:
                return ok, message
        if self.early_stopping is not None and self.validation_interval == 0:
            return False, "trainer.early_stopping needs trainer.validation_interval > 0"
        return True, "ok"
