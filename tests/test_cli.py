"""The CLI: bad input gets one line naming it, exit code 2, nothing written; demo runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from funlib.persistence import open_ds, prepare_ds

from tests.helpers import experiment_dict
from voltrain.cli import main
from voltrain.profiling import PROFILE_ENV


def _bare_labels(tmp_path: Path) -> str:
    zarr.create_array(str(tmp_path / "bare.zarr"), name="labels", data=np.ones((8,) * 3, "u8"))
    return str(tmp_path / "bare.zarr" / "labels")


def _coarse_labels(tmp_path: Path, voxel: int = 16) -> str:
    zarr.open_group(str(tmp_path / "coarse.zarr"), mode="w")
    prepare_ds(str(tmp_path / "coarse.zarr/labels"), (40,) * 3, voxel_size=(voxel,) * 3, dtype="u8")
    return str(tmp_path / "coarse.zarr" / "labels")


def _tiny_labels(tmp_path: Path) -> str:
    zarr.open_group(str(tmp_path / "tiny.zarr"), mode="w")
    prepare_ds(str(tmp_path / "tiny.zarr/labels"), (10,) * 3, voxel_size=(8,) * 3, dtype="u8")
    return str(tmp_path / "tiny.zarr" / "labels")


BAD_INPUTS = {
    "missing path": (
        lambda c, t: c["data"]["train"][0].update(raw=str(t / "no.zarr/raw")),
        r"data.train\[0\].raw: .*no.zarr",
    ),
    "no voxel size": (
        lambda c, t: c["data"]["train"][0].update(gt=_bare_labels(t), mask=None),
        r"data.train\[0\].gt: .*voxel_size",
    ),
    "voxel sizes": (
        lambda c, t: c["data"]["train"][0].update(gt=_coarse_labels(t, 12), mask=None),
        r"gt voxel_size \(12, 12, 12\) .*coarse.zarr/labels.* not an integer multiple of raw "
        r"voxel_size \(8, 8, 8\) .*cells.zarr/raw",
    ),
    "output voxel size": (
        lambda c, t: c["data"]["train"][0].update(gt=_coarse_labels(t), mask=None),
        r"model.output_downsample: .*\(8, 8, 8\).*gt voxel_size \(16, 16, 16\).*"
        r"set model.output_downsample: \[2, 2, 2\]",
    ),
    "too small": (
        lambda c, t: c["data"]["train"][0].update(gt=_tiny_labels(t), mask=None),
        r"data.train\[0\].gt: .*\(10, 10, 10\) voxels is smaller than one sample",
    ),
    "unknown augment": (
        lambda c, t: c["trainer"].update(augments=[{"type": "nope"}]),
        r"trainer.augments\[0\]: unknown augment type 'nope'",
    ),
    "zero size": (
        lambda c, t: c["trainer"].update(input_shape=[36, 36, 0]),
        r"trainer.input_shape",
    ),
    "negative size": (lambda c, t: c["model"].update(num_fmaps=-1), r"model.num_fmaps"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_line_exit_2_nothing_written(case, volume, write_config, tmp_path, capsys):
    mutate, expected = BAD_INPUTS[case]
    config = experiment_dict(volume)
    mutate(config, tmp_path)
    out = tmp_path / "run"
    code = main(["train", str(write_config(config)), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert pytest.importorskip("re").search(expected, err), err
    assert not out.exists()


def test_malformed_yaml_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("trainer: {batch_size: 2\n")
    code = main(["train", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "bad.yaml: malformed YAML at line" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_train_then_resume_continues_from_latest(volume, write_config, tmp_path, capsys):
    config = write_config(experiment_dict(volume, checkpoint_interval=2))
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "iteration_00000002.pt",
        "iteration_00000004.pt",
    ]
    # A second run into the same directory must not silently overwrite it.
    assert main(["train", str(config), "--out", str(out), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                str(config),
                "--out",
                str(out),
                "--iterations",
                "6",
                "--resume",
                "--no-progress",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_demo_runs_shortened(tmp_path):
    voltrain = shutil.which("voltrain", path=str(Path(sys.executable).parent))
    assert voltrain, "the voltrain console script is installed"
    out = tmp_path / "demo"
    result = subprocess.run(
        [voltrain, "demo", "--out", str(out), "--iterations", "4", "--size", "48", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "snapshots:" in result.stdout
    assert re.search(r"mean of the last \d+ logged \d+\.\d{4}", result.stdout), result.stdout
    snapshot = open_ds(str(out / "run" / "snapshots.zarr" / "4" / "prediction" / "s0"))
    assert snapshot.shape[0] == 3
    assert (out / "run" / "checkpoints" / "iteration_00000004.pt").exists()
    assert (out / "run" / "snapshots" / "4.png").is_file()
    assert f"view:        voltrain view {out / 'run'}" in result.stdout
    # it ends by scoring the held-out volume, trained model beside the no-learning baseline,
    # segmented by voltrain and, as a cross-check, by waterz
    for segmenter in ("voltrain", "waterz"):
        after = result.stdout[result.stdout.index(f"segmented by {segmenter}:") :]
        table = after[after.index("| affinities") :].splitlines()
        assert "VOI split" in table[0] and "ARAND" in table[0]
        assert table[2].startswith("| trained (4 iterations)")
        assert table[3].startswith("| no learning (raw intensity)")
    assert open_ds(str(out / "heldout_prediction.zarr" / "affinities" / "s0")).shape == (
        3,
        48,
        48,
        48,
    )


def test_profile_prints_the_time_of_each_pipeline_stage(
    volume, write_config, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv(PROFILE_ENV, "0")  # restored after the test; --profile sets it
    config = write_config(experiment_dict(volume, num_data_fetchers=1, max_steps=2))
    code = main(
        ["train", str(config), "--out", str(tmp_path / "run"), "--profile", "--no-progress"]
    )
    out = capsys.readouterr().out
    assert code == 0
    for stage in ("read", "sample", "target"):
        assert stage in out, out


def test_several_mistakes_print_as_one_error_listing_each(volume, write_config, tmp_path, capsys):
    config = experiment_dict(volume, batch_size=0, min_masked=2.0)
    config["model"]["bogus"] = 1
    out = tmp_path / "run"
    code = main(["train", str(write_config(config)), "--out", str(out), "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert lines[0].startswith("voltrain: error: ") and lines[0].endswith("3 problems:")
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "model.bogus",
        "trainer.batch_size",
        "trainer.min_masked",
    ]
