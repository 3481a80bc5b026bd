"""The ``balance_clip`` config key shared by the tasks that balance classes."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from voltrain.nodes.binary_target import DEFAULT_BALANCE_CLIP


def _check_clip(clip: tuple[float, float] | None) -> tuple[float, float] | None:
    if clip is not None and not 0 < clip[0] <= clip[1] < 1:
        raise ValueError(f"expected 0 < low <= high < 1, got {list(clip)}")
    return clip


BalanceClip = Annotated[
    tuple[float, float] | None,
    AfterValidator(_check_clip),
    Field(
        description="[low, high] bounds of the positive fraction when balancing weights "
        "(a rare class weighs at most 1 / (2 low) per voxel); null does not clip",
    ),
]
"""Type of ``balance_clip``: the clip of the class fraction, or None for none."""

__all__ = ["DEFAULT_BALANCE_CLIP", "BalanceClip"]
