"""The learning-rate finder: a real sweep writes its plot and table, suggests a rate inside the
swept range, and leaves the weights as they were."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.helpers import experiment_dict
from voltrain.cli import main
from voltrain.errors import ConfigError
from voltrain.experiment import parse_config
from voltrain.lr_find import find_learning_rate, sweep
from voltrain.lr_suggest import SweepRecord, smooth, suggest
from voltrain.run import TrainingRun


def _raw(volume, **trainer) -> dict:
    raw = experiment_dict(volume)
    raw["trainer"].pop("max_steps")
    raw["trainer"].update(batch_size=1, **trainer)
    return raw


def test_sweep_writes_plot_and_suggests_a_rate_inside_the_range(volume, tmp_path):
    result = find_learning_rate(
        parse_config(_raw(volume)), tmp_path, iterations=8, min_lr=1e-5, max_lr=1.0, device="cpu"
    )
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 1e-5 <= result.suggestion <= 1.0
    if result.diverged_at is not None:
        assert result.suggestion <= result.diverged_at / 10
    rates = result.learning_rates
    assert rates[0] == pytest.approx(1e-5) and np.all(np.diff(np.log(rates)) > 0)
    with result.table.open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(rates) and float(rows[0]["loss"]) == result.losses[0]


def test_a_sweep_mid_training_leaves_the_run_as_if_it_had_not_happened(volume, tmp_path):
    config = parse_config(_raw(volume, clipping={"mode": "adaptive"}))

    def losses(run, n):
        with run.trainer:
            return [s.loss for s in run.trainer.iterate(n, run.model, run.optimizer, "cpu")]

    plain = TrainingRun(config, tmp_path / "plain", "cpu")
    plain.prepare(resume=False)
    expected = losses(plain, 4)[2:]
    swept = TrainingRun(config, tmp_path / "swept", "cpu")
    swept.prepare(resume=False)
    losses(swept, 2)
    record = sweep(swept, 5, min_lr=1e-3, max_lr=10.0)
    assert len(record.learning_rates) >= 2 and swept.trainer.iteration == 2
    assert losses(swept, 2) == expected


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    rates = list(np.logspace(-6, 0, 13))
    losses = [1.0, 1.0, 0.99, 0.97, 0.9, 0.6, 0.5, 0.45, 0.44, 0.6, 2.0, 5.0, 9.0]
    assert suggest(SweepRecord(rates, losses)) == rates[5]
    smoothed = smooth([2.0] * 5)
    assert smoothed == pytest.approx([2.0] * 5)


def test_cli_prints_the_suggestion(volume, write_config, tmp_path, capsys):
    config = write_config(_raw(volume))
    out = tmp_path / "sweep"
    argv = ["lr-find", str(config), "--out", str(out), "--iterations", "5", "--no-progress"]
    assert main([*argv, "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "suggested learning rate:" in printed and (out / "lr_find.png").exists()


def test_bad_range_is_a_config_error(volume, tmp_path):
    with pytest.raises(ConfigError, match="--min-lr"):
        find_learning_rate(parse_config(_raw(volume)), tmp_path, min_lr=1.0, max_lr=0.1)
