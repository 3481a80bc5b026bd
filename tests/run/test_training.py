"""TrainingRun: checkpoints (rotation, best, strict loading, weights_from, config changes),
steps and max_steps, validation, the training log, and failing on non-finite steps."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import experiment_dict
from voltrain.callbacks import Callback
from voltrain.cli import main
from voltrain.errors import CheckpointError, ConfigError, NanLossError
from voltrain.experiment import load_config, parse_config
from voltrain.predict.plan import training_voxel_size
from voltrain.run import TrainingRun, train
from voltrain.run.checkpoint import list_checkpoints


def _raw(volume, validate=False, **trainer) -> dict:
    raw = experiment_dict(volume)
    raw["trainer"].pop("max_steps")
    raw["trainer"].update({"batch_size": 1, "max_steps": 4, **trainer})
    if validate:
        raw["data"]["validate"] = raw["data"]["train"]
    return raw


def _train(volume, out, resume=False, iterations=None, callbacks=(), **trainer):
    config = parse_config(_raw(volume, **trainer))
    return train(config, out, iterations, "cpu", resume, progress=False, callbacks=callbacks)


def _rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _iterations(out) -> list[int]:
    return [i for i, _ in list_checkpoints(out / "checkpoints")]


def test_keep_checkpoint_max_keeps_the_newest_and_the_best_apart(volume, tmp_path):
    out = tmp_path / "run"
    result = _train(
        volume,
        out,
        validate=True,
        max_steps=5,
        checkpoint_interval=1,
        keep_checkpoint_max=2,
        validation_interval=1,
        validation_samples=2,
    )
    assert _iterations(out) == [4, 5]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "best.pt",
        "iteration_00000004.pt",
        "iteration_00000005.pt",
    ]
    best = torch.load(result.best_checkpoint, weights_only=False)
    losses = {r["iteration"]: r["validation_loss"] for r in _rows(out)}
    assert best["validation_loss"] == min(losses.values())
    assert losses[best["iteration"]] == best["validation_loss"]


def test_validation_scores_the_same_fixed_samples_every_time(volume, tmp_path):
    config = parse_config(_raw(volume, validate=True, validation_samples=3))
    run = TrainingRun(config, tmp_path / "run", "cpu")
    run.prepare(resume=False)
    validator = run.trainer.validator
    first = validator.evaluate(run.model)
    again = validator.evaluate(run.model)
    assert first == again and set(first) == {"validation_loss", "validation_affinity_accuracy"}


def test_steps_count_from_the_start_and_max_steps_is_absolute(volume, tmp_path):
    out = tmp_path / "relative"
    _train(volume, out, steps=2, max_steps=None)
    assert _train(volume, out, resume=True, steps=2, max_steps=None).iteration == 4
    out = tmp_path / "absolute"
    _train(volume, out, max_steps=3)
    assert _train(volume, out, resume=True, max_steps=3).iteration == 3
    # --iterations is absolute too: train up to that iteration.
    assert _train(volume, out, resume=True, iterations=5, max_steps=3).iteration == 5
    assert [r["iteration"] for r in _rows(out)] == [1, 2, 3, 4, 5]


def test_a_corrupt_checkpoint_is_a_checkpoint_error(volume, tmp_path):
    out = tmp_path / "run"
    _train(volume, out, max_steps=2)
    (out / "checkpoints" / "iteration_00000002.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="iteration_00000002.pt' is corrupt"):
        _train(volume, out, resume=True, max_steps=3)


def test_another_models_checkpoint_is_a_checkpoint_error(volume, tmp_path):
    _train(volume, tmp_path / "small", max_steps=1)
    raw = _raw(volume)
    raw["model"]["num_fmaps"] = 3
    run = TrainingRun(parse_config(raw), tmp_path / "other", "cpu")
    with pytest.raises(CheckpointError, match="does not fit the configured model: size mismatch"):
        run.restore(tmp_path / "small" / "checkpoints" / "iteration_00000001.pt")


def test_resuming_with_a_changed_config_names_the_keys(volume, tmp_path):
    out = tmp_path / "run"
    _train(volume, out, max_steps=1)
    with pytest.raises(ConfigError, match="differs from checkpoint .* at trainer.learning_rate"):
        _train(volume, out, resume=True, max_steps=2, learning_rate=0.01)
    # How long and how verbosely a run trains may change.
    assert _train(volume, out, resume=True, max_steps=2, log_every=2).iteration == 2


def test_weights_from_loads_what_fits_and_reports_the_rest(volume, tmp_path):
    _train(volume, tmp_path / "source", max_steps=1)
    raw = _raw(volume, weights_from=str(tmp_path / "source"))
    raw["task"] = {"type": "binary"}  # one output channel: the head no longer fits
    run = TrainingRun(parse_config(raw), tmp_path / "run", "cpu")
    run.prepare(resume=False)
    report = json.loads((tmp_path / "run" / "weights_from.json").read_text())
    assert report["mismatched"] == ["head.weight", "head.bias"]
    assert report["missing"] == [] and report["unexpected"] == []
    source = torch.load(report["source"], weights_only=False)["model"]
    own = run.model.state_dict()
    assert report["matched"] == [k for k in own if not k.startswith("head.")]
    assert all(torch.equal(own[k], source[k]) for k in report["matched"])


def test_weights_from_a_model_that_shares_nothing_is_a_checkpoint_error(volume, tmp_path):
    _train(volume, tmp_path / "source", max_steps=1)
    raw = _raw(volume, weights_from=str(tmp_path / "source"))
    raw["model"]["num_fmaps"] = 3
    raw["task"] = {"type": "binary"}
    with pytest.raises(CheckpointError, match="no tensor of .* fits the configured model"):
        TrainingRun(parse_config(raw), tmp_path / "run", "cpu").prepare(resume=False)


def _scalars(out, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_log_goes_to_tensorboard_and_jsonl_and_is_cut_back_on_resume(volume, tmp_path):
    out = tmp_path / "run"
    _train(volume, out, checkpoint_interval=2, snapshot_interval=2)
    first = dict(_scalars(out, "train/loss"))
    # Lose the last checkpoint, as if killed before writing it: the resumed run retrains 3, 4.
    (out / "checkpoints" / "iteration_00000004.pt").unlink()
    (out / "metrics.jsonl").open("a").write('{"iteration": 99, "loss"')  # a torn last line
    _train(volume, out, resume=True, checkpoint_interval=2, snapshot_interval=2)
    rows = _rows(out)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert {"loss", "learning_rate", "grad_norm", "data_time", "time"} <= rows[0].keys()
    assert {"samples_per_second", "skipped_steps"} <= rows[0].keys()
    losses = _scalars(out, "train/loss")
    assert [step for step, _ in losses] == [1, 2, 3, 4]
    assert [value for _, value in losses] == pytest.approx([first[i] for i in (1, 2, 3, 4)])
    for tag in ("train/learning_rate", "train/grad_norm", "time/samples_per_second"):
        assert len(_scalars(out, tag)) == 4
    images = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    images.Reload()
    assert {"snapshot/raw", "snapshot/target", "snapshot/prediction"} <= set(
        images.Tags()["images"]
    )


class _PoisonFrom(Callback):
    """Arms a forward hook that makes the network output NaN from iteration ``k`` on."""

    def __init__(self, model, k: int):
        self.k = k
        self.armed = False
        model.register_forward_hook(lambda m, i, o: o * float("nan") if self.armed else None)

    def on_step_end(self, stats) -> bool:
        self.armed = stats.iteration + 1 >= self.k
        return False


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(volume, tmp_path):
    config = parse_config(_raw(volume, max_steps=8, checkpoint_interval=2, log_every=10))
    run = TrainingRun(config, tmp_path / "run", "cpu")
    run.trainer.add_callback(_PoisonFrom(run.model, 3))
    run.prepare(resume=False)
    with pytest.raises(NanLossError, match="iteration 3"):
        run.train(progress=False)
    assert _iterations(tmp_path / "run") == [2]
    state = torch.load(
        tmp_path / "run" / "checkpoints" / "iteration_00000002.pt", weights_only=True
    )
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_cli_exits_1_on_a_non_finite_step(volume, write_config, tmp_path, capsys):
    # Noise of std 1e38 makes the gradient norm overflow to inf in the first step.
    raw = _raw(volume, gradient_noise={"eta": 1e38, "gamma": 0.0})
    out = tmp_path / "run"
    assert main(["train", str(write_config(raw)), "--out", str(out), "--no-progress"]) == 1
    assert "not finite at iteration 1" in capsys.readouterr().err
    assert _iterations(out) == []


def test_relative_weights_from_is_resolved_against_the_config_directory(
    volume, write_config, tmp_path, monkeypatch
):
    _train(volume, tmp_path / "source", max_steps=1)
    config_path = write_config(_raw(volume, weights_from="source"))
    monkeypatch.chdir(tmp_path / "source")  # not where the config is
    config = load_config(config_path)
    assert config.trainer.weights_from == str(tmp_path / "source")
    TrainingRun(config, tmp_path / "run", "cpu").prepare(resume=False)
    assert (tmp_path / "run" / "weights_from.json").exists()


def test_predict_reads_the_training_voxel_size_from_the_checkpoint_once_the_data_is_gone(
    volume, tmp_path
):
    result = _train(volume, tmp_path / "run", max_steps=1)
    state = torch.load(result.checkpoint, weights_only=True)
    raw = _raw(volume)
    raw["data"]["train"][0]["raw"] = str(tmp_path / "gone.zarr" / "raw")
    voxel_size, source = training_voxel_size(parse_config(raw), state, str(result.checkpoint))
    assert tuple(voxel_size) == (8, 8, 8) and source.startswith("checkpoint")
