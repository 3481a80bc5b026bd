"""``voltrain segment`` and ``segment_array``: affinities to a consistent segmentation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from funlib.persistence import open_ds
from segment_volumes import (
    NEIGHBORHOOD,
    VOXEL,
    affinities_of,
    touching_cubes,
    write_array,
    write_config,
)

from voltrain.blocks.run import BlockRunOptions
from voltrain.cli import main
from voltrain.io.write import level_path
from voltrain.segment import SegmentConfig, segment_array
from voltrain.segment.blockwise import segment
from voltrain.segment.store import RECORD_KEY


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True if ``a`` and ``b`` are equal up to relabelling (0 must match 0)."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(a)) == len(np.unique(b))


def noisy_cells(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels of 4^3 voxel cells on a 16 x 16 x 24 grid, and noisy affinities: 0.9 inside
    cells, 0.05 on boundaries, but 0.35 on the boundaries of even-labelled cells (weak
    boundaries, which low thresholds keep and high thresholds merge)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(1, 40, (4, 4, 6), dtype=np.uint64)
    labels = cells.repeat(4, 0).repeat(4, 1).repeat(4, 2)
    clean = affinities_of(labels)
    weak = (clean == 0) & (labels % 2 == 0)[None]
    affinities = np.where(clean == 1, 0.9, np.where(weak, 0.35, 0.05))
    noise = rng.normal(0, 0.1, affinities.shape)
    return labels, np.clip(affinities + noise, 0, 1).astype(np.float32)


def run_segment(tmp_path, affinities, workers=1, block_shape=(8, 8, 8), thresholds=(0.3, 0.7)):
    affs = write_array(tmp_path / "in.zarr" / "affs", affinities)
    config = write_config(tmp_path, block_shape=list(block_shape), thresholds=list(thresholds))
    output = tmp_path / "out.zarr" / "seg"
    options = BlockRunOptions(workers=workers, progress=False)
    result = segment(str(config), affs, str(output), options=options)
    return {t: open_ds(level_path(path))[:] for t, path in result.outputs.items()}


def test_touching_cubes_merge_above_the_interface_score_and_not_below():
    labels, affinities = touching_cubes(interface_affinity=0.4)
    result = segment_array(affinities, NEIGHBORHOOD, [0.5, 0.7])
    # the interface's mean affinity 0.4 scores 1 - 0.4 = 0.6: apart at 0.5, merged at 0.7
    assert result[0.5].dtype == np.uint64
    assert same_partition(result[0.5], labels)
    assert same_partition(result[0.7], (labels != 0).astype(np.uint64))
    assert set(np.unique(result[0.7])) == {0, 1}


def test_a_quantile_score_merges_on_the_quantile_not_the_mean():
    labels, affinities = touching_cubes(interface_affinity=0.05)
    affinities[2, 1:7, 1:4, 7] = 0.45  # half the interface: mean 0.25, upper quartile 0.45
    thresholds = [0.6]
    mean = segment_array(affinities, NEIGHBORHOOD, thresholds)[0.6]
    upper = SegmentConfig(block_shape=None, score="quantile", quantile=0.75)
    lower = SegmentConfig(block_shape=None, score="quantile", quantile=0.25)
    assert same_partition(mean, labels)  # 1 - 0.25 = 0.75 >= 0.6: apart
    merged = (labels != 0).astype(np.uint64)
    assert same_partition(
        segment_array(affinities, NEIGHBORHOOD, thresholds, None, upper)[0.6], merged
    )
    assert same_partition(
        segment_array(affinities, NEIGHBORHOOD, thresholds, None, lower)[0.6], labels
    )


def test_touching_cubes_blockwise_match_whole_volume(tmp_path):
    labels, affinities = touching_cubes(interface_affinity=0.4)
    result = run_segment(tmp_path, affinities, block_shape=(4, 4, 4), thresholds=(0.5, 0.7))
    assert same_partition(result[0.5], labels)
    assert same_partition(result[0.7], (labels != 0).astype(np.uint64))


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_blockwise_equals_the_whole_volume_in_memory(workers, tmp_path):
    labels, affinities = noisy_cells()
    result = run_segment(tmp_path, affinities, workers=workers)
    config = SegmentConfig(block_shape=[8, 8, 8])
    in_memory = segment_array(affinities, NEIGHBORHOOD, [0.3, 0.7], config=config, voxel_size=VOXEL)
    for threshold in (0.3, 0.7):
        # the same blocks give the very same IDs, whichever worker ran which block
        np.testing.assert_array_equal(result[threshold], in_memory[threshold])
    assert len(np.unique(result[0.3])) > len(np.unique(result[0.7])) > 1


def test_blockwise_equals_one_block_up_to_relabelling_on_clean_affinities(tmp_path):
    labels, _ = noisy_cells(seed=3)
    affinities = affinities_of(labels)
    result = run_segment(tmp_path, affinities, workers=2, thresholds=(0.5,))
    whole = segment_array(affinities, NEIGHBORHOOD, [0.5])[0.5]
    assert same_partition(result[0.5], whole)


def test_an_object_spanning_eight_blocks_gets_one_id(tmp_path):
    labels = np.zeros((16, 16, 16), dtype=np.uint64)
    labels[1:15, 1:15, 1:15] = 7  # crosses the borders of all 8 blocks of 8^3
    labels[2:5, 2:5, 2:5] = 3  # a small object inside one block
    result = run_segment(tmp_path, affinities_of(labels), thresholds=(0.5,))[0.5]
    inside = result[labels == 7]
    assert len(np.unique(inside)) == 1 and inside[0] != 0
    assert same_partition(result, labels)


def _markers(output: Path) -> int:
    blocks = Path(f"{output}.done") / "fragments" / "blocks"
    return len(os.listdir(blocks)) if blocks.is_dir() else 0


def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    labels, affinities = noisy_cells(seed=1)
    affs = write_array(tmp_path / "in.zarr" / "affs", affinities)
    config = write_config(tmp_path, block_shape=[4, 4, 4], thresholds=[0.3, 0.7])
    output = tmp_path / "out.zarr" / "seg"
    args = ["segment", str(config), "--input", affs, "--output", str(output), "--no-progress"]
    command = [sys.executable, "-m", "voltrain", *args]
    process = subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _markers(output) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and its worker processes
    process.wait()
    assert _markers(output) >= 2
    assert zarr.open_group(str(output)).attrs[RECORD_KEY]["complete"] is False

    assert main(args) == 0
    assert zarr.open_group(str(output)).attrs[RECORD_KEY]["complete"] is True
    expected = segment_array(
        affinities, NEIGHBORHOOD, [0.3, 0.7], config=SegmentConfig(block_shape=[4, 4, 4])
    )
    for threshold in (0.3, 0.7):
        segmentation = open_ds(level_path(f"{output}/threshold_{threshold}"))[:]
        np.testing.assert_array_equal(segmentation, expected[threshold])
    capsys.readouterr()
    # A complete output is left alone, and other thresholds reuse its fragments.
    assert main(args) == 0
    assert "complete already" in capsys.readouterr().out
    assert main([*args, "--thresholds", "0.5"]) == 0
    expected = segment_array(
        affinities, NEIGHBORHOOD, [0.5], config=SegmentConfig(block_shape=[4, 4, 4])
    )
    np.testing.assert_array_equal(open_ds(level_path(f"{output}/threshold_0.5"))[:], expected[0.5])
    assert not Path(f"{output}/threshold_0.3").exists()


def _bad_affinities(kind: str, tmp_path: Path) -> tuple[str, list[str], str]:
    """(affinities path, extra arguments, the input the error must name) of a bad case."""
    labels, affinities = touching_cubes(0.4)
    container = tmp_path / "in.zarr"
    if kind == "channels":
        return write_array(container / "affs", affinities[:2]), [], "--input"
    affs = write_array(container / "affs", affinities)
    if kind == "no voxel size":
        zarr.create_array(str(container / "bare"), shape=affinities.shape, dtype="f4")
        return str(container / "bare"), [], "--input"
    if kind == "threshold":
        return affs, ["--thresholds", "0.5", "1.5"], "--thresholds"
    if kind == "mask voxel size":
        mask = write_array(container / "mask", np.ones(labels.shape, "u1"), voxel_size=(2, 2, 2))
        return affs, ["--mask", mask], "--mask"
    mask = write_array(container / "mask", np.zeros(labels.shape, "u1"))  # empty
    return affs, ["--mask", mask], "--mask"


@pytest.mark.parametrize(
    "kind", ["channels", "no voxel size", "threshold", "mask voxel size", "empty mask"]
)
def test_bad_input_is_one_line_naming_it_exit_2_and_nothing_written(kind, tmp_path, capsys):
    affs, extra, named = _bad_affinities(kind, tmp_path)
    config = write_config(tmp_path)
    output = tmp_path / "out.zarr" / "seg"
    args = ["segment", str(config), "--input", affs, "--output", str(output), *extra]
    assert main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err
    assert not (tmp_path / "out.zarr").exists()


def test_an_existing_array_at_the_output_is_not_replaced_without_overwrite(tmp_path, capsys):
    labels, affinities = touching_cubes(0.4)
    affs = write_array(tmp_path / "in.zarr" / "affs", affinities)
    output = tmp_path / "out.zarr" / "seg"
    write_array(output, labels)  # somebody's labels
    args = ["segment", str(write_config(tmp_path)), "--input", affs, "--output", str(output)]
    assert main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--output" in err and "--overwrite" in err, err
    np.testing.assert_array_equal(open_ds(str(output))[:], labels)
    assert main([*args, "--no-progress", "--overwrite"]) == 0
    assert zarr.open_group(str(output)).attrs[RECORD_KEY]["complete"] is True
