"""Section misalignment: one section slips, or every section from one on shifts, in-plane."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import gunpowder as gp
import numpy as np
from funlib.geometry import Coordinate, Roi

from voltrain.errors import ConfigError
from voltrain.kernels.augment_rng import augment_rng

# this augment's random stream (see voltrain.kernels.augment_rng)
RNG_STREAM = "misalign"

MODES: tuple[str, ...] = ("slip", "shift")


@dataclass(frozen=True)
class MisalignParams:
    """The random draw of one ``MisalignAugment`` application, in world units.

    The sections in ``[first, end)`` along the axis (``end`` None: to the end of the
    request) are moved in-plane by ``shift`` (zero along the axis).
    """

    apply: bool
    first: int
    end: int | None
    shift: Coordinate

    @property
    def changes_data(self) -> bool:
        return self.apply and any(self.shift)


class MisalignAugment(gp.BatchFilter):
    """Move sections in-plane, as a misaligned serial-section stack does; labels move along.

    ``mode="slip"`` moves one section, ``mode="shift"`` every section from a drawn one on
    (a step in the alignment). Sections are one voxel of the coarsest grid that all
    ``keys`` share (their least common voxel size) thick along ``axis``, and the shift,
    drawn uniformly per in-plane axis within ``max_displacement`` (world units), is a whole
    number of that grid's voxels: every array moves by the same world distance, exactly,
    so raw, labels and mask stay registered. Output voxel ``x`` of a moved section holds
    upstream's voxel ``x - shift``.

    The upstream request grows in-plane by the shift, so the content moved in is real
    data (the sources pad beyond the volume, and the mask is 0 there). Where upstream
    provides a bounded ROI that the moved content would come from beyond, every key's
    voxels there are 0: raw 0, label 0 and mask 0, so the loss ignores the strip, of the
    shift's width, at the edge of the moved sections that has no ground truth. Nothing
    else is masked: labels moved with raw are exact, also across the misaligned section
    boundary (a z-affinity there says whether the two voxels now touching show one object).

    Args:
        keys: the arrays to move: raw, labels and mask (gt and mask as nearest data).
        mode: ``"slip"`` or ``"shift"``.
        max_displacement: largest in-plane shift per axis, in world units (e.g. nm).
        axis: the spatial axis sections are cut along (0 = z).
        p: probability of applying the augment to a sample.
    """

    def __init__(
        self,
        keys: Sequence[gp.ArrayKey],
        mode: Literal["slip", "shift"] = "slip",
        max_displacement: float = 0.0,
        axis: int = 0,
        p: float = 1.0,
    ):
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got '{mode}'")
        if not max_displacement >= 0.0:
            raise ConfigError(f"max_displacement must be >= 0, got {max_displacement}")
        if axis not in (0, 1, 2):
            raise ConfigError(f"axis must be a spatial axis 0, 1 or 2, got {axis}")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"p must be in [0, 1], got {p}")
        if max_displacement == 0.0:
            warnings.warn("MisalignAugment with max_displacement 0 does nothing", stacklevel=2)
        self.keys = list(keys)
        self.mode = mode
        self.max_displacement = float(max_displacement)
        self.axis = axis
        self.p = float(p)
        self._params: MisalignParams | None = None

    def setup(self) -> None:
        for key in self.keys:
            if key in self.spec:
                self.updates(key, self.spec[key].copy())
        self.enable_autoskip()

    def make_params(
        self, rng: np.random.Generator, total_roi: Roi, grid: Coordinate
    ) -> MisalignParams:
        """Draw whether to apply, the first moved section and the in-plane shift.

        Sections are whole voxels of ``grid`` (world positions ``k * grid[axis]``) that
        overlap ``total_roi``; a shift starts at the second one at the earliest, so that
        some section stays put.
        """
        apply = bool(rng.random() < self.p)
        thickness = grid[self.axis]
        lowest = math.floor(total_roi.begin[self.axis] / thickness)
        highest = math.ceil(total_roi.end[self.axis] / thickness)
        earliest = lowest + 1 if self.mode == "shift" and highest - lowest > 1 else lowest
        section = int(rng.integers(earliest, highest))
        shift = [0, 0, 0]
        for a in range(3):
            if a != self.axis:
                steps = int(self.max_displacement // grid[a])
                shift[a] = int(rng.integers(-steps, steps + 1)) * grid[a]
        first = section * thickness
        end = first + thickness if self.mode == "slip" else None
        return MisalignParams(apply, first, end, Coordinate(shift))

    def prepare(self, request: gp.BatchRequest) -> gp.BatchRequest:
        keys = self._requested_keys(request)
        total = request[keys[0]].roi
        for key in keys[1:]:
            total = total.union(request[key].roi)
        grid = self.spec.get_lcm_voxel_size(keys)
        rng = augment_rng(request.random_seed, RNG_STREAM)
        self._params = self.make_params(rng, total, grid)
        deps = gp.BatchRequest()
        for key in keys:
            spec = request[key].copy()
            moved = self._moved_part(spec.roi)
            if self._params.changes_data and moved is not None:
                reach = spec.roi.union(moved.shift(-self._params.shift))
                # within what upstream provides: the rest is left 0 (see the class docstring)
                spec.roi = reach.intersect(self.spec[key].roi)
            deps[key] = spec
        return deps

    def process(self, batch: gp.Batch, request: gp.BatchRequest) -> gp.Batch | None:
        params = self._params
        assert params is not None, "process() runs after prepare()"
        if not params.changes_data:
            return None
        outputs = gp.Batch()
        for key in self._requested_keys(request):
            source = batch[key]
            roi = request[key].roi
            spec = source.spec.copy()
            spec.roi = roi
            outputs[key] = gp.Array(self._moved_array(source, roi), spec)
        return outputs

    def _moved_array(self, source: gp.Array, roi: Roi) -> np.ndarray:
        """``source`` cropped to ``roi``, with the moved sections read from ``x - shift``.

        Changes ``source``'s data in place and returns a view of it: only the moved
        sections are copied (one section for a slip), not the whole array.
        """
        voxel_size = source.spec.voxel_size
        origin = source.spec.roi.begin
        out = source.data[_slices(roi, origin, voxel_size)]
        moved = self._moved_part(roi)
        if moved is None:
            return out
        if not out.flags.writeable:
            out = out.copy()
        shift = self._params.shift
        readable = moved.shift(-shift).intersect(source.spec.roi)
        # read before writing: the moved-in content overlaps the sections it moves into
        content = (
            None if readable.empty else source.data[_slices(readable, origin, voxel_size)].copy()
        )
        out[_slices(moved, roi.begin, voxel_size)] = 0
        if content is not None:
            out[_slices(readable.shift(shift), roi.begin, voxel_size)] = content
        return out

    def _moved_part(self, roi: Roi) -> Roi | None:
        """The part of ``roi`` in the moved sections, or None if it has none."""
        params = self._params
        axis = self.axis
        begin = max(roi.begin[axis], params.first)
        end = roi.end[axis] if params.end is None else min(roi.end[axis], params.end)
        if begin >= end:
            return None
        offset = list(roi.begin)
        shape = list(roi.shape)
        offset[axis], shape[axis] = begin, end - begin
        return Roi(offset, shape)

    def _requested_keys(self, request: gp.BatchRequest) -> list[gp.ArrayKey]:
        return [key for key in self.keys if key in request]


def _slices(roi: Roi, origin: Coordinate, voxel_size: Coordinate) -> tuple[slice, ...]:
    """Slices selecting ``roi`` (spatial, after any leading channel axes) in an array
    whose first voxel sits at world ``origin``."""
    begin = (roi.begin - origin) / voxel_size
    end = (roi.end - origin) / voxel_size
    return (Ellipsis, *(slice(b, e) for b, e in zip(begin, end, strict=True)))
