"""OME-NGFF (0.4 and 0.5) multiscale metadata: levels, their transforms, and picking one.

A multiscale image is a zarr group whose attributes hold ``multiscales`` (0.4, zarr v2) or
``ome.multiscales`` (0.5, zarr v3). Each dataset (level) has coordinate transformations
(``scale``, optionally ``translation``); the multiscale may add its own, applied after the
dataset's. The effective voxel size and offset of a level combine both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from voltrain.errors import DataError


@dataclass(frozen=True)
class OmeLevel:
    """One level of a multiscale image, with its effective transforms (all axes).

    Attributes:
        path: the level's array path inside the multiscale group (e.g. ``s1``).
        scale: world units per voxel along every axis.
        translation: world position of the first voxel along every axis.
        axes: the multiscale's axes (``name``, ``type``, ``unit`` each).
    """

    path: str
    scale: tuple[float, ...]
    translation: tuple[float, ...]
    axes: tuple[dict, ...]


def multiscales_of(attrs: Mapping) -> list | None:
    """The ``multiscales`` list of a group's attributes (0.5 or 0.4 layout), or None."""
    ome = attrs.get("ome")
    if isinstance(ome, Mapping) and "multiscales" in ome:
        return ome["multiscales"]
    return attrs.get("multiscales")


def level_array_path(path: str) -> str:
    """The zarr array behind a local ``path``: the path itself, or the finest level of an
    OME-NGFF image group (what voltrain writes: ``image/s0``)."""
    import zarr

    handle = zarr.open(path, mode="r")
    if isinstance(handle, zarr.Group):
        multiscales = multiscales_of(handle.attrs)
        if multiscales:
            return f"{path}/{multiscales[0]['datasets'][0]['path']}"
    return path


def ome_levels(multiscale: Mapping, where: str, path: str) -> list[OmeLevel]:
    """Every level of one ``multiscales`` entry, finest first as the spec orders them."""
    try:
        axes = tuple(_axis(a) for a in multiscale["axes"])
        global_scale, global_shift = _transforms(
            multiscale.get("coordinateTransformations", []), len(axes)
        )
        levels = []
        for dataset in multiscale["datasets"]:
            scale, shift = _transforms(dataset["coordinateTransformations"], len(axes))
            levels.append(
                OmeLevel(
                    path=str(dataset["path"]),
                    scale=tuple(s * g for s, g in zip(scale, global_scale, strict=True)),
                    translation=tuple(
                        t * g + u for t, g, u in zip(shift, global_scale, global_shift, strict=True)
                    ),
                    axes=axes,
                )
            )
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(
            f"{where}: malformed OME-NGFF multiscales metadata in '{path}' ({error!r})"
        ) from None
    if not levels:
        raise DataError(f"{where}: OME-NGFF multiscales of '{path}' lists no datasets")
    return levels


def select_level(
    levels: Sequence[OmeLevel],
    scale: str | None,
    voxel_size: Sequence[float] | None,
    spatial: Sequence[int],
    where: str,
    path: str,
) -> OmeLevel:
    """The level named ``scale``, or the one whose spatial voxel size is ``voxel_size``.

    With neither, the first (finest) level. ``spatial`` indexes the space axes.
    """
    if scale is not None:
        for level in levels:
            if level.path == scale:
                return level
        names = ", ".join(level.path for level in levels)
        raise DataError(f"{where}: no OME-NGFF level '{scale}' in '{path}'; it has {names}")
    if voxel_size is not None:
        wanted = tuple(float(v) for v in voxel_size)
        for level in levels:
            size = tuple(level.scale[i] for i in spatial)
            if len(size) == len(wanted) and all(
                abs(s - w) < 1e-6 * max(1.0, abs(w)) for s, w in zip(size, wanted, strict=True)
            ):
                return level
        sizes = "; ".join(
            f"{level.path}: {[display_number(level.scale[i]) for i in spatial]}" for level in levels
        )
        raise DataError(
            f"{where}: no OME-NGFF level of '{path}' has voxel_size "
            f"{[display_number(v) for v in voxel_size]}; its "
            f"levels are {sizes}"
        )
    return levels[0]


def _axis(axis) -> dict:
    # OME-NGFF 0.1-0.3 listed axes as bare names
    if isinstance(axis, str):
        return {"name": axis, "type": "channel" if axis == "c" else "space", "unit": None}
    return {"name": axis["name"], "type": axis.get("type"), "unit": axis.get("unit")}


def _transforms(transforms: Sequence[Mapping], ndim: int):
    scale = [1.0] * ndim
    shift = [0.0] * ndim
    for transform in transforms:
        kind = transform["type"]
        if kind == "identity":
            continue
        if kind not in ("scale", "translation") or kind not in transform:
            raise ValueError(f"transform {dict(transform)} is not an inline scale or translation")
        values = [float(v) for v in transform[kind]]
        if len(values) != ndim:
            raise ValueError(f"{kind} {values} does not have one value per axis ({ndim})")
        if kind == "scale":
            shift = [t * s for t, s in zip(shift, values, strict=True)]
            scale = [a * s for a, s in zip(scale, values, strict=True)]
        else:
            shift = [t + v for t, v in zip(shift, values, strict=True)]
    return scale, shift


def display_number(value: float) -> int | float:
    """``value`` as an int when it is whole (8.0 -> 8), for messages."""
    return int(value) if float(value).is_integer() else value
