"""The experiment YAML: ``data``, ``input``, ``model``, ``task`` and ``trainer`` sections.

``load_config`` turns every problem with the file into a one-line ``ConfigError`` naming the
file and the config key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from voltrain.config import StrictModel
from voltrain.config_errors import describe_problems, validation_problems
from voltrain.data import DataConfig
from voltrain.errors import ConfigError
from voltrain.inference import InputConfig, merge_input
from voltrain.models import ModelConfigs, UNetConfig
from voltrain.segment.config import SegmentConfig
from voltrain.tasks import TaskConfigs
from voltrain.trainers import TrainerConfigs


class ExperimentConfig(StrictModel):
    """One training experiment, as written in its YAML file."""

    data: DataConfig
    input: InputConfig = Field(default_factory=InputConfig)
    model: ModelConfigs = Field(default_factory=UNetConfig)
    task: TaskConfigs
    trainer: TrainerConfigs
    segment: SegmentConfig = Field(default_factory=SegmentConfig)

    @field_validator("trainer", mode="before")
    @classmethod
    def _default_trainer_type(cls, value: Any) -> Any:
        if isinstance(value, dict) and "type" not in value:
            return {"type": "gunpowder", **value}
        return value

    def check(self) -> None:
        """Cross-section checks: the input shape fits the model, the trainer is consistent."""
        self.model.output_shape(self.trainer.input_shape)
        ok, message = self.trainer.verify()
        if not ok:
            raise ConfigError(message)
        legacy = self.trainer.legacy_input(warn=True)
        if self.input.normalize_factor is not None and legacy.normalize_factor is not None:
            raise ConfigError(
                "input.normalize_factor and trainer.normalize_factor: give only "
                "input.normalize_factor (trainer.normalize_factor is its older spelling)"
            )
        self.trainer.check_input(self.input)
        self.trainer.check_data(self.data)

    def resolved_input(self) -> InputConfig:
        """What the network sees of raw, in training, validation and prediction: the
        ``input`` section completed by the trainer section's older keys."""
        return merge_input(self.input, self.trainer.legacy_input())

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", by_alias=True)
        return yaml.safe_dump(data, sort_keys=False)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read, validate and check an experiment YAML; data paths become absolute.

    Relative data paths, a relative ``trainer.weights_from`` and an augment's relative paths
    (e.g. ``defect``'s artifacts) are resolved against the
    directory of the config file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with data, model, task and trainer")
    config = parse_config(raw, source=str(path))
    base_dir = path.parent.resolve()
    update: dict[str, Any] = {"data": config.data.resolved(base_dir)}
    trainer_update: dict[str, Any] = {}
    weights_from = config.trainer.weights_from
    if weights_from and not Path(weights_from).is_absolute():
        trainer_update["weights_from"] = str((base_dir / weights_from).resolve())
    augments = getattr(config.trainer, "augments", None)
    if augments:
        trainer_update["augments"] = [augment.resolved(base_dir) for augment in augments]
    if trainer_update:
        update["trainer"] = config.trainer.model_copy(update=trainer_update)
    return config.model_copy(update=update)


def parse_config(raw: dict, source: str = "config") -> ExperimentConfig:
    """Validate a config mapping; errors name ``source`` and the key."""
    try:
        config = ExperimentConfig.model_validate(raw)
        config.check()
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, raw, source)) from None
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return config


def describe_validation_error(error: ValidationError, data: Any, source: str = "config") -> str:
    """Every problem of ``error``, each naming its key (see ``voltrain.config_errors``)."""
    return describe_problems(source, validation_problems(error, data))
