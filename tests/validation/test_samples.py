"""Sample validation scores raw as training sees it."""

from __future__ import annotations

from tests.helpers import experiment_dict
from voltrain.experiment import parse_config
from voltrain.run import TrainingRun


def test_validation_samples_get_the_fixed_intensity_maps_of_training(volume, tmp_path):
    to_minus_one_one = {"type": "intensity_scale_shift", "scale": 2.0, "shift": -1.0}
    raw = experiment_dict(volume, validation_samples=2, augments=[to_minus_one_one])
    raw["data"]["validate"] = raw["data"]["train"]
    run = TrainingRun(parse_config(raw), tmp_path / "run", "cpu")
    run.prepare(resume=False)
    training = run.trainer.pipeline.request_sample(seed=1)["raw"]
    for sample in [training, *(s["raw"] for s in run.trainer.validator.samples())]:
        assert -1.0 <= sample.min() < -0.2 and sample.max() <= 1.0
