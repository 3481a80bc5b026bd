"""``voltrain evaluate``: VOI and ARAND of known splits and merges."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "segment"))
from segment_volumes import write_array  # noqa: E402

from voltrain.cli import main  # noqa: E402
from voltrain.evaluate import evaluate_segmentation  # noqa: E402


def two_objects() -> np.ndarray:
    """Two gt objects of 64 voxels each, side by side, and a background margin."""
    gt = np.zeros((4, 4, 10), dtype=np.uint64)
    gt[:, :, 1:5] = 1
    gt[:, :, 5:9] = 2
    return gt


def skimage_arand(sizes_pair, sizes_gt, sizes_seg, n) -> float:
    """The adapted Rand error from the contingency counts (pairs of distinct voxels)."""
    both = sum(s * s for s in sizes_pair) - n
    precision = both / (sum(s * s for s in sizes_seg) - n)
    recall = both / (sum(s * s for s in sizes_gt) - n)
    return 1 - 2 * precision * recall / (precision + recall)


def test_a_perfect_segmentation_scores_zero_whatever_its_ids():
    gt = two_objects()
    scores = evaluate_segmentation(gt * 1000 + 7 * (gt != 0), gt)
    assert scores["voi"] == scores["arand"] == 0
    assert scores["splits"] == scores["merges"] == 0


def test_one_object_split_in_halves_costs_half_a_bit_of_split():
    gt = two_objects()
    segmentation = gt.copy()
    segmentation[:2, :, 1:5] = 3  # object 1 in two halves of 32 voxels
    segmentation[gt == 0] = 9  # labels on gt background do not count
    scores = evaluate_segmentation(segmentation, gt)
    # H(seg | gt): half the voxels sit in an object cut in two equal halves -> 0.5 bit
    assert scores["voi_split"] == pytest.approx(0.5)
    assert scores["voi_merge"] == pytest.approx(0.0)
    assert scores["arand"] == pytest.approx(
        skimage_arand([32, 32, 64], [64, 64], [32, 32, 64], 128)
    )
    assert (scores["splits"], scores["merges"]) == (1, 0)


def test_two_objects_merged_cost_one_bit_of_merge():
    gt = two_objects()
    scores = evaluate_segmentation((gt != 0).astype(np.uint64) * 5, gt)
    assert scores["voi_split"] == pytest.approx(0.0)
    assert scores["voi_merge"] == pytest.approx(1.0)
    assert scores["arand"] == pytest.approx(skimage_arand([64, 64], [64, 64], [128], 128))
    assert (scores["splits"], scores["merges"]) == (0, 1)


def test_errors_outside_the_mask_are_ignored():
    gt = two_objects()
    segmentation = gt.copy()
    segmentation[:, :, 1:9] = 4  # everything merged ...
    segmentation[:, :, 1:5] = 1  # ... except where the mask is
    mask = np.zeros(gt.shape, dtype=np.uint8)
    mask[:, :, :5] = 1
    assert evaluate_segmentation(segmentation, gt, mask)["voi"] == 0
    assert evaluate_segmentation(segmentation, gt)["voi"] == pytest.approx(0.0)
    segmentation[:, :, 5:9] = 1  # now a merge of object 2 into 1, outside the mask
    assert evaluate_segmentation(segmentation, gt, mask)["voi"] == 0
    assert evaluate_segmentation(segmentation, gt)["voi_merge"] == pytest.approx(1.0)


def test_the_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    gt = two_objects()
    segmentation = (gt != 0).astype(np.uint64)
    gt_path = write_array(tmp_path / "d.zarr" / "gt", gt)
    seg_path = write_array(tmp_path / "d.zarr" / "seg", segmentation)
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--segmentation", seg_path, "--gt", gt_path, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "voi_merge" in printed and "1.0000" in printed
    scores = json.loads(out.read_text())
    assert scores["best"]["voi_merge"] == pytest.approx(1.0)
    assert scores["best"]["merges"] == 1


BAD = {
    "voxel size": lambda d: write_array(d / "d.zarr" / "gt", two_objects(), voxel_size=(8, 2, 2)),
    "shape": lambda d: write_array(d / "d.zarr" / "gt", two_objects()[:, :, :6]),
    "no voxel size": lambda d: _without_voxel_size(d / "d.zarr" / "gt"),
}


def _without_voxel_size(path: Path) -> str:
    import zarr

    zarr.open_group(str(path.parent), mode="a")
    zarr.create_array(str(path), shape=(4, 4, 10), dtype="u8")
    return str(path)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_gt_is_one_line_naming_it_and_nothing_written(case, tmp_path, capsys):
    seg_path = write_array(tmp_path / "s.zarr" / "seg", two_objects())
    gt_path = BAD[case](tmp_path)
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--segmentation", seg_path, "--gt", gt_path, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--gt" in err, err
    assert not out.exists()
