"""Writing volumes any viewer places correctly: one OME-NGFF image per array.

Every volume voltrain writes (snapshot arrays, predictions, segmentations) is an OME-NGFF
0.5 image in zarr v3, a group holding one level::

    <path>/              zarr group, attributes["ome"] = {"version": "0.5", "multiscales": [
                           {"name", "axes": [c (channel, if any), z, y, x (space, unit)],
                            "datasets": [{"path": "s0", "coordinateTransformations":
                              [{"scale": [1, *voxel_size]}, {"translation": [0, *offset]}]}]}]}
    <path>/s0            zarr v3 array, dimension_names [c,] z, y, x; attributes voxel_size,
                         offset, axis_names, units, types (funlib.persistence's keys) and
                         dimension_units (neuroglancer's, for the array opened on its own)

OME readers (neuroglancer, napari, funlib.persistence's ``open_ome_ds`` on ``<path>``, "s0")
find voxel size, offset and units in the multiscales; ``funlib.persistence.open_ds`` on
``<path>/s0`` finds them in the array's own attributes. Translation is in world units, as
the OME-NGFF spec has it (applied after the scale). Labels are stored as uint64, the integer
type neuroglancer draws as segments. Units are OME's names (``nanometer``); common
abbreviations (``nm``, ``um``) are translated, and a volume without units is in nanometers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from funlib.geometry import Coordinate
from zarr.codecs import BloscCodec

from voltrain.errors import ConfigError

logger = logging.getLogger(__name__)

LEVEL = "s0"
DEFAULT_UNIT = "nanometer"
COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")
SPACE_AXES = ("z", "y", "x")
# SI prefixes of OME-NGFF's length units: long name -> (symbol, power of ten).
_PREFIXES = {
    "yocto": ("y", -24), "zepto": ("z", -21), "atto": ("a", -18), "femto": ("f", -15),
    "pico": ("p", -12), "nano": ("n", -9), "micro": ("u", -6), "milli": ("m", -3),
    "centi": ("c", -2), "deci": ("d", -1), "": ("", 0), "hecto": ("h", 2), "kilo": ("k", 3),
    "mega": ("M", 6), "giga": ("G", 9), "tera": ("T", 12), "peta": ("P", 15),
    "exa": ("E", 18), "zetta": ("Z", 21), "yotta": ("Y", 24),
}  # fmt: skip
# OME-NGFF's length units in meters, and the abbreviations other tools write for them.
METERS_PER_UNIT = {f"{long}meter": 10.0**power for long, (_, power) in _PREFIXES.items()} | {
    "angstrom": 1e-10, "foot": 0.3048, "inch": 0.0254, "mile": 1609.344,
    "parsec": 3.0856775814913673e16, "yard": 0.9144,
}  # fmt: skip
UNIT_ALIASES = {f"{short}m": f"{long}meter" for long, (short, _) in _PREFIXES.items()} | {
    "µm": "micrometer", "μm": "micrometer", "micron": "micrometer", "Å": "angstrom",
    "nanometers": "nanometer", "micrometers": "micrometer",
}  # fmt: skip


def ome_unit(unit: str | None) -> str | None:
    """The OME-NGFF name of a length unit (``nm`` -> ``nanometer``); None if there is none
    (``None`` or empty) or it is not a length unit OME knows."""
    if unit is None or not str(unit).strip():
        return None
    unit = str(unit).strip()
    if unit in METERS_PER_UNIT:
        return unit
    return UNIT_ALIASES.get(unit)


@dataclass(frozen=True)
class Placement:
    """Where a volume lies in the world: voxel size, offset (world units) and units of the
    spatial axes (z, y, x). Build it with ``Placement.of``."""

    voxel_size: Coordinate
    offset: Coordinate
    units: tuple[str, ...]

    @classmethod
    def of(
        cls,
        voxel_size: Sequence[int],
        offset: Sequence[int],
        units: Sequence[str | None] | None = None,
        where: str = "units",
    ) -> Placement:
        """Check and normalise a placement; ``units`` (one per axis, or None) default to
        nanometers. A unit OME does not know is a ``ConfigError`` naming ``where``."""
        voxel_size, offset = Coordinate(voxel_size), Coordinate(offset)
        dims = voxel_size.dims
        if offset.dims != dims or dims > len(SPACE_AXES):
            raise ConfigError(f"voxel size {voxel_size} and offset {offset} do not fit")
        if units is None or all(ome_unit(u) is None and not u for u in units):
            units = [None] * dims
        if len(units) != dims:
            raise ConfigError(f"{where}: {list(units)} gives not one unit per axis of {dims}")
        names = []
        for unit in units:
            name = ome_unit(unit)
            if name is None and unit:
                raise ConfigError(
                    f"{where}: '{unit}' is not a length unit of OME-NGFF (e.g. nanometer, "
                    "micrometer, or nm, um)"
                )
            names.append(name or DEFAULT_UNIT)
        return cls(voxel_size, offset, tuple(names))


def source_units(array, where: str) -> list[str] | None:
    """The OME names of a source array's units (``funlib.persistence.Array.units``), or
    None when it has none.

    A unit OME does not know is dropped with a warning (nanometers are then written), so
    that a run does not fail late on a label it cannot act on.
    """
    units = [str(u) for u in (getattr(array, "units", None) or [])]
    if not any(units):
        return None
    names = [ome_unit(u) for u in units]
    if any(n is None for n in names):
        logger.warning("%s: units %s are not OME length units; writing nanometers", where, units)
        return None
    return names


def ome_image_attributes(name: str, placement: Placement, channels: bool) -> dict:
    """The attributes of an OME-NGFF 0.5 image group with one level (see the module)."""
    dims = placement.voxel_size.dims
    axes = [{"name": "c", "type": "channel"}] if channels else []
    axes += [
        {"name": axis, "type": "space", "unit": unit}
        for axis, unit in zip(SPACE_AXES[-dims:], placement.units, strict=True)
    ]
    lead = 1 if channels else 0
    transforms = [
        {"type": "scale", "scale": [1] * lead + [int(v) for v in placement.voxel_size]},
        {"type": "translation", "translation": [0] * lead + [int(o) for o in placement.offset]},
    ]
    multiscale = {
        "name": name,
        "axes": axes,
        "datasets": [{"path": LEVEL, "coordinateTransformations": transforms}],
    }
    return {"ome": {"version": "0.5", "multiscales": [multiscale]}}


def array_attributes(placement: Placement, channels: bool) -> dict:
    """The level array's own attributes: funlib.persistence's keys and neuroglancer's
    ``dimension_units`` (scale and unit per axis)."""
    dims = placement.voxel_size.dims
    lead = 1 if channels else 0
    return {
        "voxel_size": [int(v) for v in placement.voxel_size],
        "offset": [int(o) for o in placement.offset],
        "axis_names": ["c^"] * lead + list(SPACE_AXES[-dims:]),
        "units": list(placement.units),
        "types": ["channel"] * lead + ["space"] * dims,
        "dimension_units": [None] * lead
        + [f"{int(v)} {u}" for v, u in zip(placement.voxel_size, placement.units, strict=True)],
    }


def create_image(
    parent: zarr.Group,
    name: str,
    shape: Sequence[int],
    dtype: np.dtype | type,
    placement: Placement,
    chunk_shape: Sequence[int] | None = None,
    labels: bool = False,
    attributes: dict | None = None,
    compressors=COMPRESSOR,
) -> zarr.Array:
    """Create an empty OME-NGFF image ``name`` in ``parent`` (a group; replaces what is
    there) and return its level array, ``name/s0``.

    Args:
        parent: a zarr v3 group.
        name: the image's path in ``parent`` (``pred`` or ``a/pred``; groups on the way are
            created).
        shape: ``(z, y, x)`` or ``(channels, z, y, x)`` voxels.
        dtype: the stored type; ignored for ``labels``, which are uint64.
        placement: voxel size, offset and units.
        chunk_shape: chunk shape of the array (default: zarr's choice).
        labels: store uint64 label ids (gt, segmentations).
        attributes: extra attributes of the image group (e.g. a completion record).
    """
    dims = placement.voxel_size.dims
    channels = len(shape) - dims
    if channels not in (0, 1):
        raise ConfigError(f"{name}: shape {tuple(shape)} does not fit {dims} spatial axes")
    group = parent
    *above, last = name.split("/")
    for step in above:
        group = group.require_group(step)
    image = group.create_group(last, overwrite=True, attributes={
        **ome_image_attributes(last, placement, bool(channels)),
        **(attributes or {}),
    })  # fmt: skip
    dimension_names = (["c"] if channels else []) + list(SPACE_AXES[-dims:])
    return image.create_array(
        LEVEL,
        shape=tuple(int(s) for s in shape),
        dtype=np.uint64 if labels else np.dtype(dtype),
        chunks=tuple(int(c) for c in chunk_shape) if chunk_shape is not None else "auto",
        compressors=compressors,
        dimension_names=dimension_names,
        attributes=array_attributes(placement, bool(channels)),
        fill_value=0,
    )


def write_image(
    parent: zarr.Group, name: str, data: np.ndarray, placement: Placement, labels: bool = False
) -> zarr.Array:
    """Write ``data`` as the OME-NGFF image ``name`` in ``parent`` (see ``create_image``);
    label ids must be integers and are stored as uint64 (see ``as_label_ids``)."""
    data = np.asarray(data)
    if labels:
        data = as_label_ids(data, name)
    array = create_image(parent, name, data.shape, data.dtype, placement, labels=labels)
    array[...] = np.ascontiguousarray(data)
    return array


def as_label_ids(data: np.ndarray, where: str) -> np.ndarray:
    """Label ids as uint64; fractional ids are an error naming ``where``.

    Signed ids are reinterpreted bit for bit: uint64 ids that passed through int64 (as
    training batches carry them) come back unchanged, however large.
    """
    if data.dtype == np.uint64:
        return data
    if data.dtype != bool and not np.issubdtype(data.dtype, np.integer):
        raise ConfigError(f"{where}: label ids must be integers, got {data.dtype}")
    if np.issubdtype(data.dtype, np.signedinteger):
        return data.astype(np.int64).view(np.uint64)
    return data.astype(np.uint64)


def level_path(image: str | Path) -> str:
    """The path of an image's level array, which ``funlib.persistence.open_ds`` opens."""
    return f"{image}/{LEVEL}"
