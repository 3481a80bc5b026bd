"""The two views of an unlabeled sample show the same world points: on a volume whose
voxels encode their own coordinates, undoing the strong view's mirror and transposition
on the student's output region gives back the teacher's, voxel for voxel, and both sit at
the world offsets the sample reports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from funlib.geometry import Coordinate

from voltrain.augments.base import parse_augments
from voltrain.data import UnlabeledDatasetConfig
from voltrain.errors import ConfigError, DataError
from voltrain.nodes.mirror_transpose_augment import MirrorTransposeAugment
from voltrain.synthetic import write_datasets
from voltrain.trainers.consistency import undo_view
from voltrain.unlabeled import (
    UnlabeledKeys,
    UnlabeledPipeline,
    compute_unlabeled_sampling_maps,
    open_unlabeled_volumes,
    strong_view_augments,
)

VOXEL_SIZE = Coordinate(4, 4, 4)
OFFSET = Coordinate(40, 80, 120)
SHAPE = (40, 44, 48)


def coordinate_code(z, y, x):
    """A voxel's value: its own (z, y, x) index, exact in float32."""
    return z * 10000 + y * 100 + x


@pytest.fixture(scope="module")
def coordinates(tmp_path_factory):
    container = tmp_path_factory.mktemp("coordinates") / "coordinates.zarr"
    z, y, x = np.indices(SHAPE)
    raw = coordinate_code(z, y, x).astype(np.float32)
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[4:36, 4:40, 6:44] = 1
    write_datasets(
        container, {"raw": raw, "mask": mask}, VOXEL_SIZE, OFFSET, Coordinate(16, 16, 16), 3
    )
    return container


def _pipeline(container, input_shape, output_shape, transform=True) -> UnlabeledPipeline:
    datasets = [UnlabeledDatasetConfig(raw=str(container / "raw"), mask=str(container / "mask"))]
    volumes = open_unlabeled_volumes(datasets, VOXEL_SIZE)
    input_shape, output_shape = Coordinate(input_shape), Coordinate(output_shape)
    view = MirrorTransposeAugment([UnlabeledKeys().strong]) if transform else None
    return UnlabeledPipeline(
        datasets=datasets,
        augments=[],
        input_shape=input_shape,
        output_shape=output_shape,
        voxel_size=VOXEL_SIZE,
        sampling_maps=compute_unlabeled_sampling_maps(volumes, output_shape, 0.5),
        view_transform=view,
        normalize_factor=1.0,
    )


def _world_codes(output_offset, shape) -> np.ndarray:
    """The codes of the voxels of the output region at ``output_offset`` (world)."""
    begin = (Coordinate(output_offset) - OFFSET) / VOXEL_SIZE
    z, y, x = np.indices(shape)
    return coordinate_code(z + begin[0], y + begin[1], x + begin[2]).astype(np.float32)


@pytest.mark.parametrize(
    "input_shape, output_shape",
    [((20, 20, 20), (10, 10, 10)), ((21, 21, 21), (10, 10, 10))],
    ids=["even-context", "odd-context"],
)
def test_undoing_the_strong_view_gives_the_teachers_world_points(
    coordinates, input_shape, output_shape
):
    pipeline = _pipeline(coordinates, input_shape, output_shape)
    before, _ = pipeline.context()
    region = tuple(slice(b, b + o) for b, o in zip(before, output_shape, strict=True))
    seen_mirrors, seen_transposes = set(), set()
    for seed in range(24):
        sample = pipeline.request_sample(seed)
        mirror, transpose = sample["mirror"].tolist(), sample["transpose"].tolist()
        seen_mirrors.add(tuple(mirror))
        seen_transposes.add(tuple(transpose))
        # A network's output voxel k sees input voxel `before + k` in its own frame.
        student = torch.from_numpy(sample["strong"][(slice(None), *region)])
        teacher = sample["raw"][(slice(None), *region)]
        undone = undo_view(student, mirror, transpose).numpy()
        world = _world_codes(sample["output_offset"], output_shape)
        np.testing.assert_array_equal(undone[0], world, err_msg=f"seed {seed}")
        np.testing.assert_array_equal(teacher[0], world, err_msg=f"seed {seed}")
        # the weak view's reported offset places it too (its centre lies in the volume)
        centre = Coordinate(input_shape) / 2
        index = (Coordinate(sample["raw_offset"]) - OFFSET) / VOXEL_SIZE + centre
        assert sample["raw"][(0, *centre)] == coordinate_code(*index)
    # the draws exercised mirroring and transposition, not only the identity
    assert len(seen_mirrors) > 3 and len(seen_transposes) > 2


def test_the_mask_marks_the_output_region_within_the_unlabeled_mask(coordinates):
    pipeline = _pipeline(coordinates, (20, 20, 20), (10, 10, 10))
    for seed in range(8):
        sample = pipeline.request_sample(seed)
        begin = (Coordinate(sample["output_offset"]) - OFFSET) / VOXEL_SIZE
        z, y, x = (np.arange(10) + b for b in begin)
        inside = (
            ((z >= 4) & (z < 36))[:, None, None]
            & ((y >= 4) & (y < 40))[None, :, None]
            & ((x >= 6) & (x < 44))[None, None, :]
        )
        np.testing.assert_array_equal(sample["mask"], inside.astype(np.float32))
        assert sample["mask"].mean() >= 0.5  # unlabeled_min_masked


def test_without_a_view_transform_the_views_share_their_geometry(coordinates):
    pipeline = _pipeline(coordinates, (20, 20, 20), (10, 10, 10), transform=False)
    sample = pipeline.request_sample(3)
    np.testing.assert_array_equal(sample["strong"], sample["raw"])


def test_transposed_axes_must_share_the_input_shape(coordinates):
    pipeline = _pipeline(coordinates, (20, 24, 24), (10, 14, 14))
    with pytest.raises(ConfigError, match="transpose_axes"):
        pipeline.check_view_transform()


def test_unlabeled_raw_of_another_voxel_size_is_refused(coordinates):
    datasets = [UnlabeledDatasetConfig(raw=str(coordinates / "raw"))]
    with pytest.raises(DataError, match=r"data.unlabeled\[0\].raw: voxel_size"):
        open_unlabeled_volumes(datasets, Coordinate(8, 8, 8))


def test_the_strong_view_gets_the_augments_that_change_raw_only():
    augments = parse_augments(
        [
            {"type": "elastic", "control_point_spacing": [40] * 3, "jitter_sigma": [2] * 3},
            {"type": "simple"},
            {"type": "intensity"},
            {"type": "gamma"},
            {"type": "noise"},
            {"type": "intensity_scale_shift", "scale": 2.0, "shift": -1.0},
            {"type": "intensity_scale_shift", "scale": 1.5, "shift": 0.0, "p": 0.5},
        ]
    )
    chosen = strong_view_augments(augments)
    # geometry is the view transform's business; a p: 1 map is fixed input, for both views
    assert [(a.type, a.p) for a in chosen] == [
        ("intensity", 1.0),
        ("gamma", 1.0),
        ("noise", 1.0),
        ("intensity_scale_shift", 0.5),
    ]
