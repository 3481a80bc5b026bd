"""The mean teacher's parts: the EMA teacher, the consistency ramp, and the loss that
compares the student's output on the strong view with the teacher's on the weak view.

The two views of an unlabeled sample differ by a mirror and a transposition
(``voltrain.unlabeled``). Undoing them on the student's output puts every voxel back on
the teacher's world point. Channels that carry a direction must move too: an affinity
channel of offset ``o`` in the student's frame is, in the teacher's frame, the affinity
of offset ``o'`` (``o`` transposed, with mirrored axes negated). When ``o'`` is in the
neighbourhood, that channel takes the value as is; when ``-o'`` is (a mirrored ``-x``
affinity is a ``+x`` one), the affinity between ``w`` and ``w + o'`` is channel ``-o'``
at voxel ``w + o'``, so the value moves by ``o'`` and voxels it leaves empty are left out
of the loss. Tasks whose channels are per-voxel scalars (binary, distances, classes) need
no channel change; other tasks cannot have a geometric transform between the views.

Everything here runs on the device without host syncs: the view parameters are host
integers from the batch, the step's ``finite`` flag stays a device tensor.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence

import torch

from voltrain.errors import ConfigError

# Task types whose output channels are per-voxel scalars, unchanged by mirror/transpose.
SCALAR_CHANNEL_TASKS = frozenset({"binary", "distances", "multiclass"})
# Task types whose activation is a per-channel sigmoid (pseudo-labels are 0/1 targets).
SIGMOID_TASKS = frozenset({"binary", "affinities"})


def sigmoid_rampup(iteration: int, rampup: int) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = iteration / rampup`` clipped to [0, 1] (Tarvainen
    and Valpola 2017); 1 throughout for ``rampup`` 0."""
    if rampup <= 0:
        return 1.0
    t = min(max(iteration / rampup, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def undo_view(output: torch.Tensor, mirror: Sequence[int], transpose: Sequence[int]):
    """The student's ``output`` (c, z, y, x) of the strong view in the teacher's frame.

    The strong view is ``transpose(mirror(weak))`` (``MirrorTransposeParams``): output
    axis ``d`` holds axis ``transpose[d]``; so axes go back first, then flip back.
    """
    inverse = [list(transpose).index(a) for a in range(3)]
    restored = output.permute(0, *(1 + i for i in inverse))
    flips = [1 + a for a in range(3) if mirror[a]]
    return restored.flip(flips) if flips else restored


def channel_correspondence(
    task_config, mirror: Sequence[int], transpose: Sequence[int]
) -> list[tuple[int, tuple[int, int, int]]]:
    """For each student channel: the teacher channel it becomes and the voxel shift ``t``
    such that ``aligned[teacher](u) = undone[student](u + t)``. Raises ``ConfigError``
    when the task's channels cannot be mapped exactly."""
    channels = _channel_count(task_config)
    geometric = any(mirror) or tuple(transpose) != (0, 1, 2)
    if task_config.type in SCALAR_CHANNEL_TASKS or not geometric:
        return [(c, (0, 0, 0)) for c in range(channels)]
    if task_config.type != "affinities":
        raise ConfigError(
            f"trainer.view_transform: the channels of task type '{task_config.type}' change "
            "under mirroring and transposition in ways voltrain cannot undo exactly; set "
            "trainer.view_transform.enabled: false"
        )
    offsets = [tuple(o) for o in task_config.neighborhood]
    result = []
    for offset in offsets:
        world = [0, 0, 0]
        for d in range(3):
            world[transpose[d]] = offset[d]
        world = tuple(-w if mirror[a] else w for a, w in enumerate(world))
        if world in offsets:
            result.append((offsets.index(world), (0, 0, 0)))
        elif tuple(-w for w in world) in offsets:
            result.append((offsets.index(tuple(-w for w in world)), tuple(-w for w in world)))
        else:
            raise ConfigError(
                f"task.neighborhood: offset {list(offset)} becomes {list(world)} between the "
                "views, which is not in the neighbourhood (nor its opposite); list it, or "
                "restrict trainer.view_transform"
            )
    return result


def check_view_transform(
    task_config, mirror_axes: Sequence[int], transpose_axes: Sequence[int]
) -> None:
    """``ConfigError`` now, before training, if any mirror of ``mirror_axes`` with any
    permutation of ``transpose_axes`` could not be undone on the task's channels."""
    for flips in itertools.product((0, 1), repeat=len(mirror_axes)):
        mirror = [0, 0, 0]
        for axis, flip in zip(mirror_axes, flips, strict=True):
            mirror[axis] = flip
        for order in itertools.permutations(transpose_axes):
            transpose = list(range(3))
            for axis, source in zip(transpose_axes, order, strict=True):
                transpose[axis] = source
            channel_correspondence(task_config, mirror, transpose)


def _channel_count(task_config) -> int:
    return task_config.build().num_channels


def align_to_teacher(
    logits: torch.Tensor, correspondence: list, mirror, transpose
) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's ``logits`` (c, z, y, x) in the teacher's frame and channels, and
    where they are defined (1) or were moved out of the region (0)."""
    undone = undo_view(logits, mirror, transpose)
    aligned = torch.zeros_like(undone)
    valid = torch.zeros_like(undone)
    for student, (teacher, shift) in enumerate(correspondence):
        target, source = _shift_slices(shift, undone.shape[1:])
        aligned[(teacher, *target)] = undone[(student, *source)]
        valid[(teacher, *target)] = 1.0
    return aligned, valid


def _shift_slices(shift, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices with ``out[target] = in[source]`` for ``out(u) = in(u + shift)``."""
    target, source = [], []
    for t, n in zip(shift, shape, strict=True):
        target.append(slice(max(0, -t), n - max(0, t)))
        source.append(slice(max(0, t), n + min(0, t)))
    return tuple(target), tuple(source)


def consistency_loss(
    task,
    student: torch.Tensor,
    teacher: torch.Tensor,
    weight: torch.Tensor,
    pseudo_label_threshold: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared difference of the activations (weighted by ``weight``), and the
    binary cross-entropy of the student against the teacher's rounded prediction where
    the teacher is at least ``pseudo_label_threshold`` sure (0 without a threshold)."""
    teacher_prediction = task.activation(teacher)
    difference = (task.activation(student) - teacher_prediction) ** 2
    total = weight.sum().clamp(min=1e-6)
    mse = (difference * weight).sum() / total
    if pseudo_label_threshold is None:
        return mse, torch.zeros_like(mse)
    sure = (teacher_prediction >= pseudo_label_threshold) | (
        teacher_prediction <= 1 - pseudo_label_threshold
    )
    labels = (teacher_prediction >= 0.5).to(student.dtype)
    pseudo_weight = weight * sure.to(weight.dtype)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(student, labels, reduction="none")
    return mse, (bce * pseudo_weight).sum() / pseudo_weight.sum().clamp(min=1e-6)


class MeanTeacher:
    """The teacher: a copy of the student whose weights follow the student's as an
    exponential moving average, updated after each applied step.

    The decay at a step is ``min(ema_decay, 1 - 1 / (iteration + 1))`` when ``warmup``
    (Tarvainen and Valpola 2017: early on the teacher averages the few steps there are),
    else ``ema_decay``. A step the guarded step skipped (``finite`` false) leaves the
    teacher as it is, decided on the device.
    """

    def __init__(self, student: torch.nn.Module, ema_decay: float, warmup: bool = True):
        self.model = copy.deepcopy(student)
        self.model.requires_grad_(False)
        self.model.eval()
        self.ema_decay = ema_decay
        self.warmup = warmup

    def decay(self, iteration: int) -> float:
        """The decay of the update that follows the step producing ``iteration + 1``."""
        if not self.warmup:
            return self.ema_decay
        return min(self.ema_decay, 1.0 - 1.0 / (iteration + 1))

    @torch.no_grad()
    def update(self, student: torch.nn.Module, finite: torch.Tensor, iteration: int) -> None:
        """teacher <- decay * teacher + (1 - decay) * student, where ``finite``."""
        rate = (1.0 - self.decay(iteration)) * finite.to(torch.float32)
        for mine, theirs in zip(self.model.parameters(), student.parameters(), strict=True):
            mine.lerp_(theirs.detach(), rate.to(mine.dtype))
        for mine, theirs in zip(self.model.buffers(), student.buffers(), strict=True):
            mine.copy_(torch.where(finite, theirs, mine))

    @torch.no_grad()
    def predict(self, raw: torch.Tensor, autocast) -> torch.Tensor:
        """The teacher's logits (float32) on ``raw``, under the step's ``autocast``."""
        with autocast():
            return self.model(raw).float()

    def state_dict(self) -> dict:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
