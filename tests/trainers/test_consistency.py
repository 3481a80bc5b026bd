"""The mean teacher's parts: affinities seen in a mirrored and transposed frame come back
as the teacher's affinities exactly; the EMA update and its skip on a non-finite step;
the consistency ramp; the pseudo-label loss only where the teacher is sure."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from voltrain.errors import ConfigError
from voltrain.tasks import AffinitiesTaskConfig, BinaryTaskConfig
from voltrain.trainers.consistency import (
    MeanTeacher,
    align_to_teacher,
    channel_correspondence,
    check_view_transform,
    consistency_loss,
    sigmoid_rampup,
)

NEIGHBORHOOD = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-3, 0, 0], [0, -3, 0], [0, 0, -3]]
MARGIN = 3
SIZE = 10


def _affinities(labels: np.ndarray, neighborhood) -> np.ndarray:
    """Affinities of the interior (``MARGIN`` voxels in from each side) of ``labels``."""
    inner = tuple(slice(MARGIN, MARGIN + SIZE) for _ in range(3))
    centre = labels[inner]
    channels = []
    for offset in neighborhood:
        shifted = labels[tuple(slice(MARGIN + o, MARGIN + o + SIZE) for o in offset)]
        channels.append((centre == shifted) & (centre > 0))
    return np.stack(channels).astype(np.float32)


def _transform(labels: np.ndarray, mirror, transpose) -> np.ndarray:
    flips = tuple(slice(None, None, -1) if m else slice(None) for m in mirror)
    return np.ascontiguousarray(labels[flips].transpose(transpose))


@pytest.mark.parametrize(
    "mirror, transpose",
    [
        (m, t)
        for m in itertools.product((0, 1), repeat=3)
        for t in ((0, 1, 2), (0, 2, 1), (2, 0, 1), (1, 0, 2))
    ],
)
def test_affinities_of_the_strong_frame_align_with_the_teachers(mirror, transpose):
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, size=(SIZE + 2 * MARGIN,) * 3)
    task = AffinitiesTaskConfig(neighborhood=NEIGHBORHOOD)
    teacher = _affinities(labels, NEIGHBORHOOD)
    # The student predicts, in its own frame, the affinities of its own offsets.
    student = torch.from_numpy(_affinities(_transform(labels, mirror, transpose), NEIGHBORHOOD))
    channels = channel_correspondence(task, mirror, transpose)
    aligned, valid = align_to_teacher(student, channels, mirror, transpose)
    valid = valid.numpy().astype(bool)
    np.testing.assert_array_equal(aligned.numpy()[valid], teacher[valid])
    # values move only for channels whose direction the mirror reversed
    reversed_channels = sum(1 for _, shift in channels if any(shift))
    expected_left_out = sum(
        SIZE**3 - np.prod([SIZE - abs(s) for s in shift]) for _, shift in channels
    )
    assert (~valid).sum() == expected_left_out
    assert (reversed_channels > 0) == any(mirror)
    assert sorted(c for c, _ in channels) == list(range(len(NEIGHBORHOOD)))


def test_an_offset_the_neighbourhood_cannot_follow_is_refused():
    task = AffinitiesTaskConfig(neighborhood=[[-1, 0, 0], [0, -1, 0]])
    with pytest.raises(ConfigError, match=r"task.neighborhood: offset \[0, -1, 0\]"):
        check_view_transform(task, [0, 1, 2], [0, 1, 2])
    check_view_transform(task, [0, 1, 2], [])  # mirroring alone is undone


def test_binary_channels_need_no_change():
    task = BinaryTaskConfig()
    assert channel_correspondence(task, (1, 0, 1), (2, 1, 0)) == [(0, (0, 0, 0))]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.BatchNorm3d(2))


def test_the_teacher_moves_by_the_ema_and_stays_after_a_skipped_step():
    student = _model()
    teacher = MeanTeacher(student, ema_decay=0.9, warmup=False)
    before = [p.clone() for p in teacher.model.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student[1].running_mean.add_(1.0)
    teacher.update(student, torch.tensor(False), iteration=5)
    for old, new in zip(before, teacher.model.parameters(), strict=True):
        assert torch.equal(old, new)
    assert torch.equal(teacher.model[1].running_mean, torch.zeros(2))
    teacher.update(student, torch.tensor(True), iteration=5)
    for old, new, current in zip(
        before, teacher.model.parameters(), student.parameters(), strict=True
    ):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * current)
    assert torch.equal(teacher.model[1].running_mean, student[1].running_mean)
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_the_ema_decay_warms_up():
    teacher = MeanTeacher(_model(), ema_decay=0.99, warmup=True)
    assert teacher.decay(0) == 0.0  # the first update copies the student
    assert teacher.decay(9) == pytest.approx(0.9)
    assert teacher.decay(10_000) == 0.99


def test_the_consistency_ramp_is_a_sigmoid_ramp():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(100, 100) == 1.0
    assert sigmoid_rampup(500, 100) == 1.0
    assert sigmoid_rampup(0, 0) == 1.0
    values = [sigmoid_rampup(i, 100) for i in range(101)]
    assert values == sorted(values)


def test_pseudo_labels_count_only_where_the_teacher_is_sure():
    task = BinaryTaskConfig().build()
    teacher = torch.tensor([4.0, -4.0, 0.1]).reshape(1, 1, 3, 1, 1)  # sure, sure, unsure
    student = torch.tensor([0.0, 0.0, 0.0]).reshape(1, 1, 3, 1, 1)
    weight = torch.ones_like(student)
    mse, pseudo = consistency_loss(task, student, teacher, weight, 0.9)
    expected_mse = ((0.5 - torch.sigmoid(teacher)) ** 2).mean()
    torch.testing.assert_close(mse, expected_mse)
    torch.testing.assert_close(pseudo, torch.tensor(math.log(2.0)))
    weight[..., :2, :, :] = 0  # only the unsure voxel left: no pseudo-label
    assert consistency_loss(task, student, teacher, weight, 0.9)[1] == 0
