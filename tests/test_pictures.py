"""PNG pictures of a run: snapshot slices and the loss curve, drawn by a callback."""

from __future__ import annotations

import json

import numpy as np
from matplotlib.image import imread

from tests.helpers import experiment_dict
from voltrain.experiment import parse_config
from voltrain.pictures import RunPictures, label_colors
from voltrain.run import TrainingRun


def test_a_run_draws_a_png_per_snapshot_and_the_loss_curve(volume, tmp_path):
    config = parse_config(experiment_dict(volume, snapshot_interval=2, batch_size=1))
    run = TrainingRun(config, tmp_path / "run", "cpu")
    run.prepare(resume=False)
    run.train(progress=False)

    pictures = sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir())
    assert pictures == ["2.png", "4.png"]
    image = imread(tmp_path / "run" / "snapshots" / "4.png")
    # Four panels side by side, and not a blank canvas.
    assert image.shape[1] > 3 * image.shape[0] / 1.5
    assert image[..., :3].std() > 0.05
    loss = imread(tmp_path / "run" / "loss.png")
    assert loss.shape[0] > 200 and loss[..., :3].std() > 0.01
    assert not list((tmp_path / "run").rglob(".*.tmp"))


def test_loss_png_follows_metrics_and_skips_a_line_cut_short(tmp_path):
    rows = [{"iteration": i, "loss": 1.0 / i} for i in range(1, 30)]
    text = "".join(json.dumps(row) + "\n" for row in rows) + '{"iteration": 30, "lo'
    (tmp_path / "metrics.jsonl").write_text(text)
    assert RunPictures(tmp_path).write_loss_plot() == tmp_path / "loss.png"
    assert RunPictures(tmp_path / "empty").write_loss_plot() is None


def test_label_colours_keep_background_black_and_ids_apart():
    labels = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint64)
    rgb = label_colors(labels)
    assert np.all(rgb[labels == 0] == 0)
    assert not np.allclose(rgb[0, 1], rgb[0, 2])
    np.testing.assert_array_equal(rgb[0, 1], rgb[1, 1])
    assert rgb[labels > 0].min() > 0.2  # every object visible against the background


def test_signed_targets_are_drawn_over_the_tasks_value_range():
    from voltrain.pictures import snapshot_figure
    from voltrain.tasks import DistancesTaskConfig

    value_range = DistancesTaskConfig(scale=5).build().value_range
    rng = np.random.default_rng(0)
    arrays = {
        "raw": rng.random((1, 4, 4, 4)),
        "target": rng.uniform(-1, 1, (1, 4, 4, 4)),
        "prediction": rng.uniform(-1, 1, (1, 4, 4, 4)),
    }
    figure = snapshot_figure(3, arrays, value_range)
    norms = [axes.images[0].norm for axes in figure.axes]
    assert [(n.vmin, n.vmax) for n in norms] == [(0, 1), (-1, 1), (-1, 1)]
