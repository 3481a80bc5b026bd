"""Open a volume of any supported format as a ``funlib.persistence.Array``.

One reader serves training, validation and ``voltrain predict --input``:

- OME-NGFF 0.4 and 0.5 multiscale images (zarr v2 and v3): one level, picked by name
  (``scale: s1``) or by voxel size (``voxel_size: [8, 8, 8]``), else the finest; voxel
  size, offset, units and axis names come from the OME axes and coordinate transforms.
  A path to one level's array (``image.zarr/s1``) reads the parent's OME metadata.
- Plain zarr v2/v3 arrays with ``voxel_size``/``offset`` (funlib.persistence) or
  ``resolution``/``offset`` (gunpowder) attributes, in world units, numpy axis order.
- N5 (through tensorstore) with ``resolution``/``offset`` (or ``voxel_size``) attributes,
  stored in N5's x, y, z order as gunpowder writes them.
- HDF5 (through h5py), e.g. CREMI's ``sample.hdf/volumes/labels/neuron_ids`` with
  ``resolution``/``offset`` attributes.
- Any of the zarr forms and HDF5 at ``s3://``, ``gs://`` or ``http(s)://`` URLs (see
  ``stores``); N5 is read from local containers.

Nothing is read but metadata: the returned array's ``_source_data`` is read chunk by chunk
(a zarr array, or a view from ``voltrain.io.views``). The array carries ``units`` and
``axis_names`` of the source (funlib.persistence's ``Array.units`` and ``.axis_names``,
spatial units only; ``""`` when the source names none). Every failure is a ``DataError``
naming the config key and the path.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from funlib.geometry import Coordinate
from funlib.persistence import Array
from pydantic import Field

from voltrain.config import StrictModel
from voltrain.errors import DataError
from voltrain.io.ome import display_number, multiscales_of, ome_levels, select_level
from voltrain.io.stores import Location, is_url, locate, remote_url_and_options, zarr_store
from voltrain.io.views import Hdf5Array, LabelArray, MaskArray, TensorStoreArray

logger = logging.getLogger(__name__)

OPEN_TIMEOUT_S = 120.0
# world units that are converted to nanometers when a voxel size is not whole in them
TO_NANOMETER = {"micrometer": 1000, "micron": 1000, "millimeter": 1_000_000}


class ArraySource(StrictModel):
    """A volume to read: its path or URL and, for a multiscale image, which level.

    In YAML either a plain string (``raw: data.zarr/raw``) or a mapping
    (``raw: {path: image.zarr, scale: s1}``).
    """

    path: str = Field(min_length=1)
    scale: str | None = Field(None, description="OME-NGFF level to read, e.g. s1")
    voxel_size: list[float] | None = Field(
        None,
        min_length=1,
        description="pick the OME-NGFF level with this voxel size (in the image's units); "
        "for a single array, check that it has it",
    )

    def __str__(self) -> str:
        picked = f"scale {self.scale}" if self.scale else None
        if self.voxel_size is not None:
            picked = f"voxel_size {[display_number(v) for v in self.voxel_size]}"
        return f"{self.path} ({picked})" if picked else self.path


def as_source(source: str | ArraySource) -> ArraySource:
    """``source`` as an ``ArraySource`` (a plain string is its path)."""
    return ArraySource(path=source) if isinstance(source, str) else source


def source_path(source: str | ArraySource) -> str:
    """The path or URL of ``source``."""
    return source if isinstance(source, str) else source.path


def resolve_source(source: str | ArraySource, base_dir: Path) -> str | ArraySource:
    """``source`` with a relative local path made absolute against ``base_dir``."""
    path = source_path(source)
    if is_url(path) or Path(path).is_absolute():
        return source
    absolute = str((base_dir / path).resolve())
    return absolute if isinstance(source, str) else source.model_copy(update={"path": absolute})


@dataclass
class _Metadata:
    """What the reader found, before conversion to whole world units."""

    voxel_size: list[float] | None
    offset: list[float] | None
    units: list[str] | None
    axis_names: list[str] | None
    types: list[str] | None


def open_source(source: str | ArraySource, where: str) -> Array:
    """Open ``source`` as an Array with voxel size, offset, units and axis names.

    ``where`` is the config key or argument the source came from (``data.train[0].raw``).
    """
    source = as_source(source)
    location = locate(source.path)
    try:
        stored, metadata = _OPENERS[location.kind](location, source, where)
    except DataError:
        raise
    except Exception as error:  # network, codec and metadata errors, reported as one line
        message = " ".join(str(error).split()) or type(error).__name__
        raise DataError(f"{where}: cannot read '{source.path}': {message}") from None
    return _array(stored, metadata, source, where)


def as_labels(array: Array, background: int, where: str) -> Array:
    """``array`` read with label ``background`` swapped with 0 (0 = background after)."""
    if background == 0:
        return array
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{where}.background: labels of dtype {array.dtype} have no label ids")
    info = np.iinfo(array.dtype)
    if not info.min <= background <= info.max:
        raise DataError(f"{where}.background: {background} is not a {array.dtype} label id")
    return _rewrapped(array, LabelArray(array._source_data, background))


def as_mask(array: Array) -> Array:
    """``array`` read as a uint8 0/1 mask (nonzero or True = trusted)."""
    return _rewrapped(array, MaskArray(array._source_data))


def _rewrapped(array: Array, stored) -> Array:
    return Array(
        stored,
        array.offset,
        array.voxel_size,
        array.axis_names,
        array.units,
        array.types,
        chunks=stored.chunks,
    )


def _open_zarr(location: Location, source: ArraySource, where: str):
    import zarr

    store = zarr_store(location, where)
    try:
        node = zarr.open(store=store, path=location.key, mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.NodeNotFoundError):
        raise DataError(f"{where}: no zarr array or group at '{source.path}'") from None
    if isinstance(node, zarr.Group):
        multiscales = multiscales_of(node.attrs)
        if not multiscales:
            raise DataError(
                f"{where}: '{source.path}' is a zarr group, not an array or an OME-NGFF "
                "multiscale image"
            )
        return _ome_level(node, multiscales[0], source, where)
    metadata = _plain_metadata(node.attrs, reverse=False)
    dimension_names = getattr(node.metadata, "dimension_names", None)  # zarr v3 only
    if metadata.axis_names is None and dimension_names and all(dimension_names):
        metadata.axis_names = [str(name) for name in dimension_names]
    if metadata.voxel_size is None and location.key:
        parent_key, _, name = location.key.rpartition("/")
        try:
            parent = zarr.open_group(store=store, path=parent_key, mode="r")
        except (FileNotFoundError, KeyError, zarr.errors.NodeNotFoundError):
            parent = None  # no parent group metadata: not a level of an OME image
        multiscales = multiscales_of(parent.attrs) if parent is not None else None
        if multiscales:
            named = source.model_copy(update={"scale": name, "voxel_size": None})
            return _ome_level(parent, multiscales[0], named, where)
    return node, metadata


def _ome_level(group, multiscale: Mapping, source: ArraySource, where: str):
    levels = ome_levels(multiscale, where, source.path)
    axes = levels[0].axes
    types = [a["type"] or {"c": "channel", "t": "time"}.get(a["name"], "space") for a in axes]
    if "time" in types:
        raise DataError(
            f"{where}: '{source.path}' has a time axis; voltrain reads space axes and "
            "optionally channels"
        )
    spatial = [i for i, t in enumerate(types) if t == "space"]
    level = select_level(levels, source.scale, source.voxel_size, spatial, where, source.path)
    stored = group[level.path]
    metadata = _Metadata(
        voxel_size=[level.scale[i] for i in spatial],
        offset=[level.translation[i] for i in spatial],
        units=[axes[i]["unit"] or "" for i in spatial],
        axis_names=[a["name"] for a in axes],
        types=types,
    )
    return stored, metadata


def _open_hdf5(location: Location, source: ArraySource, where: str):
    import h5py

    if location.remote:
        import fsspec

        url, options = remote_url_and_options(location.container, where)
        try:
            # h5py reads the file through fsspec's random access (ranged requests)
            handle = h5py.File(fsspec.open(url, "rb", **options).open(), "r")
        except FileNotFoundError:
            raise DataError(f"{where}: no such HDF5 file '{location.container}'") from None
    elif not Path(location.container).is_file():
        raise DataError(f"{where}: no such HDF5 file '{location.container}'")
    else:
        handle = h5py.File(location.container, "r")
    dataset = handle.get(location.key) if location.key else None
    if not isinstance(dataset, h5py.Dataset):
        raise DataError(f"{where}: no HDF5 dataset '{location.key}' in '{location.container}'")
    attrs = {key: _hdf5_attribute(value) for key, value in dataset.attrs.items()}
    return Hdf5Array(dataset), _plain_metadata(attrs, reverse=False)


def _hdf5_attribute(value):
    """An HDF5 attribute as plain Python values (numpy arrays to lists, bytes to str)."""
    value = np.asarray(value).tolist()
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value.decode() if isinstance(value, bytes) else value


def _open_n5(location: Location, source: ArraySource, where: str):
    import tensorstore as ts

    if location.remote:
        raise DataError(f"{where}: N5 is read from local containers only, not '{source.path}'")
    path = Path(location.container, location.key)
    attributes = path / "attributes.json"
    if not attributes.is_file():
        raise DataError(f"{where}: no N5 dataset at '{source.path}'")
    spec = {"driver": "n5", "kvstore": {"driver": "file", "path": str(path)}}
    store = ts.open(spec, read=True).result(timeout=OPEN_TIMEOUT_S)
    # N5 lists axes fastest-first (x, y, z); numpy order is the reverse
    attrs = json.loads(attributes.read_text())
    return TensorStoreArray(store.T), _plain_metadata(attrs, reverse=True)


_OPENERS = {"zarr": _open_zarr, "hdf5": _open_hdf5, "n5": _open_n5}


def _plain_metadata(attrs: Mapping, reverse: bool) -> _Metadata:
    """Metadata from funlib.persistence's or gunpowder's attributes."""

    def get(*names):
        for name in names:
            value = attrs.get(name)
            if value is not None:
                value = list(value) if isinstance(value, Sequence | np.ndarray) else [value]
                return value[::-1] if reverse else value
        return None

    axis_names = get("axis_names")
    types = get("types")
    if types is None and axis_names is not None:
        types = ["channel" if str(n).endswith("^") else "space" for n in axis_names]
    return _Metadata(
        voxel_size=get("voxel_size", "resolution"),
        offset=get("offset"),
        units=get("units"),
        axis_names=axis_names,
        types=types,
    )


def _array(stored, metadata: _Metadata, source: ArraySource, where: str) -> Array:
    """The Array of ``stored`` with checked metadata in whole world units."""
    if metadata.voxel_size is None:
        raise DataError(
            f"{where}: '{source.path}' has no voxel size: it is neither an OME-NGFF image nor "
            "an array with a 'voxel_size' or 'resolution' attribute"
        )
    ndim, spatial = len(stored.shape), len(metadata.voxel_size)
    offset = metadata.offset if metadata.offset is not None else [0] * spatial
    if spatial > ndim or len(offset) != spatial:
        raise DataError(
            f"{where}: '{source.path}' has {ndim} axes but voxel_size {metadata.voxel_size} "
            f"and offset {offset}"
        )
    units = metadata.units if metadata.units and len(metadata.units) == spatial else None
    units = [str(u) for u in units] if units else [""] * spatial
    voxel_size, world_offset, units = _whole_world_units(
        metadata.voxel_size, offset, units, source, where
    )
    if source.voxel_size is not None and source.scale is None:
        asked = [float(v) for v in source.voxel_size]
        if asked not in ([float(v) for v in metadata.voxel_size], [float(v) for v in voxel_size]):
            raise DataError(
                f"{where}: '{source.path}' has voxel_size {list(voxel_size)}, not the "
                f"{[display_number(v) for v in source.voxel_size]} the config asks for"
            )
    axis_names, types = metadata.axis_names, metadata.types
    if axis_names is None or len(axis_names) != ndim or types is None or len(types) != ndim:
        channels = ndim - spatial
        names = ["z", "y", "x"][-spatial:] if spatial <= 3 else [f"d{i}" for i in range(spatial)]
        axis_names = (["c"] if channels == 1 else [f"c{i}" for i in range(channels)]) + names
        types = ["channel"] * channels + ["space"] * spatial
    try:
        return Array(
            stored, world_offset, voxel_size, axis_names, units, types, chunks=tuple(stored.chunks)
        )
    except (AssertionError, ValueError) as error:
        message = " ".join(str(error).split())
        raise DataError(f"{where}: inconsistent metadata in '{source.path}': {message}") from None


def _whole_world_units(voxel_size, offset, units: list[str], source: ArraySource, where: str):
    """Voxel size and offset as integers, converting to nanometers where that makes them so.

    funlib.geometry works in integer world units. An offset off the voxel grid (some OME
    pyramids shift coarse levels by half a voxel) is moved to the nearest grid point.
    """
    factor = 1
    if not all(_is_whole(v) for v in voxel_size):
        factors = {TO_NANOMETER.get(u) for u in units}
        if len(factors) == 1 and None not in factors:
            factor = factors.pop()
            units = ["nanometer"] * len(units)
        if not all(_is_whole(v * factor) for v in voxel_size):
            raise DataError(
                f"{where}: '{source.path}' has voxel size {list(voxel_size)} {units}; voltrain "
                "needs whole numbers of a world unit"
            )
    voxels = Coordinate(round(v * factor) for v in voxel_size)
    if any(v <= 0 for v in voxels):
        raise DataError(f"{where}: '{source.path}' has a non-positive voxel size {list(voxels)}")
    world = [o * factor for o in offset]
    # half a voxel rounds up on every axis alike (round() would round half to even)
    snapped = Coordinate(math.floor(o / v + 0.5) * v for o, v in zip(world, voxels, strict=True))
    if any(abs(s - o) > 1e-6 * max(1.0, abs(o)) for s, o in zip(snapped, world, strict=True)):
        logger.warning(
            "%s: offset %s of '%s' is not on its voxel grid %s; using %s",
            where,
            world,
            source.path,
            tuple(voxels),
            tuple(snapped),
        )
    return voxels, snapped, units


def _is_whole(value: float) -> bool:
    return abs(value - round(value)) < 1e-6 * max(1.0, abs(value))
