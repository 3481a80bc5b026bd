"""Score a segmentation against ground truth: VOI split and merge, ARAND, error counts.

The scores are scikit-image's (``variation_of_information``, ``adapted_rand_error``) over
the voxels inside the mask where the ground truth is not 0. VOI
is in bits: ``voi_split`` is H(segmentation | gt), the cost of cutting objects apart;
``voi_merge`` is H(gt | segmentation), the cost of joining them. Segmentation label 0
counts as one more segment (unlabelled voxels inside an object are an error).

``splits`` counts ground-truth objects that fall into more than one segment, and
``merges`` counts segments that cover more than one ground-truth object; a piece counts
when it holds at least ``min_overlap`` of the object it is counted for (by default 1%),
so that a few boundary voxels do not make every object an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import fastremap
import numpy as np

from voltrain.errors import DataError

METRICS = ("voi_split", "voi_merge", "voi", "arand", "splits", "merges")


def evaluate_segmentation(
    segmentation: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray | None = None,
    min_overlap: float = 0.01,
) -> dict:
    """VOI split/merge/sum, ARAND and split/merge counts of ``segmentation`` against ``gt``.

    Voxels where ``gt`` is 0 or ``mask`` is 0 are ignored. Returns a dict with the keys
    ``voi_split``, ``voi_merge``, ``voi``, ``arand``, ``splits``, ``merges`` and
    ``voxels`` (the voxels scored).
    """
    from skimage.metrics import adapted_rand_error, variation_of_information

    if segmentation.shape != gt.shape:
        raise DataError(f"segmentation shape {segmentation.shape} != gt shape {gt.shape}")
    scored = gt != 0
    if mask is not None:
        if mask.shape != gt.shape:
            raise DataError(f"mask shape {mask.shape} != gt shape {gt.shape}")
        scored &= mask != 0
    voxels = int(scored.sum())
    if voxels == 0:
        raise DataError("nothing to score: no voxel is inside the mask with a gt label")
    # Consecutive labels keep the contingency table small whatever the IDs (uint64
    # fragment IDs are far apart); 0 stays 0.
    truth, _ = fastremap.renumber(np.ascontiguousarray(gt[scored]), preserve_zero=True)
    test, _ = fastremap.renumber(np.ascontiguousarray(segmentation[scored]), preserve_zero=False)
    truth, test = truth.astype(np.int64), test.astype(np.int64)
    voi_split, voi_merge = variation_of_information(truth, test)
    arand = adapted_rand_error(truth, test, ignore_labels=())[0]
    splits, merges = _error_counts(truth, test, min_overlap)
    return {
        "voi_split": float(voi_split),
        "voi_merge": float(voi_merge),
        "voi": float(voi_split + voi_merge),
        "arand": float(arand),
        "splits": splits,
        "merges": merges,
        "voxels": voxels,
    }


def _error_counts(truth: np.ndarray, test: np.ndarray, min_overlap: float) -> tuple[int, int]:
    pairs, overlap = np.unique(np.stack([truth, test]), axis=1, return_counts=True)
    truth_size = np.bincount(truth)[pairs[0]]
    test_size = np.bincount(test)[pairs[1]]
    # A piece counts for an object when it holds at least min_overlap of that object.
    split_pieces = pairs[0][overlap >= min_overlap * truth_size]
    merge_pieces = pairs[1][overlap >= min_overlap * test_size]
    splits = int((np.bincount(split_pieces) > 1).sum())
    merges = int((np.bincount(merge_pieces) > 1).sum())
    return splits, merges


def segmentation_arrays(path: str) -> list[tuple[str, float | None]]:
    """The arrays to score at ``path``: the array itself, or each ``threshold_*`` array of a
    ``voltrain segment`` output group (with its threshold)."""
    import zarr

    from voltrain.segment.store import RECORD_KEY, threshold_name

    try:
        handle = zarr.open(path, mode="r")
    except (FileNotFoundError, KeyError, ValueError):
        return [(path, None)]  # open_array reports what is wrong with it
    if isinstance(handle, zarr.Group) and RECORD_KEY in handle.attrs:
        thresholds = handle.attrs[RECORD_KEY].get("thresholds") or []
        return [(f"{path}/{threshold_name(t)}", float(t)) for t in thresholds]
    return [(path, None)]


def evaluate_files(segmentation: str, gt: str, mask: str | None = None) -> list[dict]:
    """Score each segmentation array at ``segmentation`` against the ``gt`` array.

    Everything is checked first: voxel sizes must match, and gt (and mask) must cover the
    segmentation's ROI, which is the region scored.
    """
    from voltrain.data import open_array
    from voltrain.segment.plan import check_mask_not_empty, check_same_grid

    arrays = [(open_array(p, "--segmentation"), p, t) for p, t in segmentation_arrays(segmentation)]
    if not arrays:
        raise DataError(f"--segmentation '{segmentation}': holds no segmentation yet")
    truth = open_array(gt, "--gt")
    mask_array = open_array(mask, "--mask") if mask else None
    for array, path, _ in arrays:
        check_same_grid(truth, array, "--gt", gt, f"--segmentation '{path}'")
        if mask_array is not None:
            check_same_grid(mask_array, array, "--mask", mask, f"--segmentation '{path}'")
    if mask_array is not None:
        check_mask_not_empty(mask_array, "--mask", mask)
    rows = []
    for array, path, threshold in arrays:
        roi = array.roi
        try:
            scores = evaluate_segmentation(
                array[roi], truth[roi], None if mask_array is None else mask_array[roi]
            )
        except DataError as error:
            raise DataError(f"--gt '{gt}': {error}") from None
        rows.append({"segmentation": path, "threshold": threshold, **scores})
    return rows


def format_table(rows: list[dict]) -> str:
    """The scores as a plain-text table, one row per segmentation."""
    header = f"{'threshold':>9}  {'voi_split':>9}  {'voi_merge':>9}  {'voi':>7}  "
    header += f"{'arand':>7}  {'splits':>6}  {'merges':>6}  segmentation"
    lines = [header]
    for row in rows:
        threshold = "-" if row["threshold"] is None else f"{row['threshold']:g}"
        lines.append(
            f"{threshold:>9}  {row['voi_split']:9.4f}  {row['voi_merge']:9.4f}  "
            f"{row['voi']:7.4f}  {row['arand']:7.4f}  {row['splits']:6d}  {row['merges']:6d}  "
            f"{row['segmentation']}"
        )
    return "\n".join(lines)


def write_json(rows: list[dict], path: str | Path) -> None:
    """Write the scores (and the best row by VOI) as JSON."""
    best = min(rows, key=lambda row: row["voi"])
    Path(path).write_text(json.dumps({"results": rows, "best": best}, indent=2) + "\n")
