"""``voltrain view``: look at volumes in neuroglancer, each at its world position.

Paths may name a run directory (its latest snapshot is shown), a snapshot group, an
OME-NGFF image (voltrain's predictions and segmentations) or a zarr array with
``voxel_size``/``offset`` attributes. The viewer is neuroglancer's Python server on
127.0.0.1: it serves the arrays itself (``neuroglancer.LocalVolume``), so nothing but the
browser needs access to the files. Each layer's coordinate space carries the array's
voxel size and units, and its voxel offset the array's offset: raw, labels and predictions
overlay wherever they lie. Integer label volumes (and ``gt``, ``labels``, ``segmentation``,
``fragments``) become segmentation layers; everything else image layers, three channels
drawn as RGB (affinities).
"""

from __future__ import annotations

import math
import time
import webbrowser
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from voltrain.errors import DataError, VoltrainError
from voltrain.io.write import DEFAULT_UNIT, METERS_PER_UNIT, ome_unit

LABEL_NAMES = frozenset({"gt", "labels", "segmentation", "fragments"})
# Snapshot arrays in the order they are stacked; the others start hidden.
SNAPSHOT_ORDER = ("raw", "gt", "mask", "target", "weight", "prediction", "gradient")
SHOWN = frozenset({"raw", "gt", "prediction"})
IN_MEMORY_BYTES = 256 * 2**20
RGB_SHADER = """void main() {
  emitRGB(vec3(toNormalized(getDataValue(0)), toNormalized(getDataValue(1)),
               toNormalized(getDataValue(2))));
}"""


@dataclass
class ViewLayer:
    """One array to show: its data (leading channel axis if ``channels``) and placement."""

    name: str
    data: object
    voxel_size: tuple[float, ...]
    offset: tuple[float, ...]
    units: tuple[str, ...]
    channels: bool
    labels: bool
    visible: bool = True


def find_layers(paths: Sequence[str]) -> list[ViewLayer]:
    """The layers for ``paths`` (see the module docstring); a path that is none of those
    is a ``DataError`` naming it."""
    layers: list[ViewLayer] = []
    for path in paths:
        layers += _layers_of(Path(path))
    names: dict[str, int] = {}
    for layer in layers:  # neuroglancer needs unique layer names
        names[layer.name] = names.get(layer.name, 0) + 1
        if names[layer.name] > 1:
            layer.name = f"{layer.name} ({names[layer.name]})"
    return layers


def _layers_of(path: Path) -> list[ViewLayer]:
    if (path / "snapshots.zarr").is_dir():
        path = path / "snapshots.zarr"
    node = _open_node(path)
    if isinstance(node, zarr.Array):
        return [_plain_array_layer(path, node)]
    if _multiscales(node) is not None:
        return [_ome_layer(path, node)]
    iterations = [int(key) for key in node.group_keys() if key.isdigit()]
    if iterations:  # a snapshot container: show the latest
        return _layers_of(path / str(max(iterations)))
    images = sorted(
        (key for key in node.group_keys() if _multiscales(node[key]) is not None),
        key=lambda k: SNAPSHOT_ORDER.index(k) if k in SNAPSHOT_ORDER else len(SNAPSHOT_ORDER),
    )
    if not images:
        raise DataError(f"'{path}': holds no zarr array, image or snapshot to view")
    layers = [_ome_layer(path / key, node[key]) for key in images]
    for layer in layers:
        layer.visible = layer.name in SHOWN or not SHOWN & {x.name for x in layers}
    return layers


def _open_node(path: Path):
    if not path.exists():
        raise DataError(f"'{path}': no such file or directory")
    try:
        return zarr.open(str(path), mode="r")
    except Exception:  # zarr raises several types for "not zarr"
        raise DataError(f"'{path}': not a run directory, zarr array or OME-NGFF image") from None


def _multiscales(node) -> list | None:
    if not isinstance(node, zarr.Group):
        return None
    attrs = node.attrs.asdict()
    ome = attrs.get("ome")
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else attrs.get("multiscales")
    return multiscales if isinstance(multiscales, list) and multiscales else None


def _ome_layer(path: Path, group: zarr.Group) -> ViewLayer:
    """The first (finest) level of an OME-NGFF image, with its effective transforms."""
    try:
        multiscale = _multiscales(group)[0]
        axes = multiscale["axes"]
        dataset = multiscale["datasets"][0]
        scale = np.ones(len(axes))
        translation = np.zeros(len(axes))
        for transforms in (dataset["coordinateTransformations"],
                           multiscale.get("coordinateTransformations", [])):  # fmt: skip
            for transform in transforms:
                if transform["type"] == "scale":
                    scale, translation = (
                        scale * transform["scale"],
                        translation * transform["scale"],
                    )
                elif transform["type"] == "translation":
                    translation = translation + transform["translation"]
        array = group[dataset["path"]]
    except (KeyError, TypeError, IndexError, ValueError) as error:
        raise DataError(f"'{path}': malformed OME-NGFF multiscales ({error})") from None
    space = [i for i, axis in enumerate(axes) if axis.get("type", "space") == "space"]
    if len(space) != 3 or len(axes) - len(space) > 1:
        raise DataError(f"'{path}': expected 3 space axes and at most one other, got {axes}")
    units = [ome_unit(axes[i].get("unit")) or DEFAULT_UNIT for i in space]
    return _layer(path.name, array, scale[space], translation[space], units, len(axes) == 4)


def _plain_array_layer(path: Path, array: zarr.Array) -> ViewLayer:
    """A zarr array placed by ``voxel_size``/``offset`` attributes (funlib.persistence's),
    or by gunpowder's ``resolution``; unit-sized voxels at the origin without either."""
    from funlib.persistence import open_ds

    try:
        located = open_ds(str(path), mode="r")
    except Exception as error:
        raise DataError(f"'{path}': cannot read its voxel size and offset ({error})") from None
    if located.voxel_size.dims != 3 or array.ndim not in (3, 4):
        raise DataError(f"'{path}': expected a (z, y, x) or (c, z, y, x) array, got {array.shape}")
    units = [ome_unit(u) or DEFAULT_UNIT for u in (located.units or [None] * 3)]
    return _layer(path.name, array, located.voxel_size, located.offset, units, array.ndim == 4)


def _layer(name, array, voxel_size, offset, units, channels: bool) -> ViewLayer:
    dtype = np.dtype(array.dtype)
    labels = not channels and dtype.kind in "iub" and (dtype.itemsize >= 4 or name in LABEL_NAMES)
    data = array[...] if array.nbytes <= IN_MEMORY_BYTES else array
    if labels and dtype != np.uint64:  # neuroglancer's label type
        data = data.astype(np.uint64) if isinstance(data, np.ndarray) else _AsUint64(data)
    return ViewLayer(
        name=name,
        data=data,
        voxel_size=tuple(float(v) for v in voxel_size),
        offset=tuple(float(o) for o in offset),
        units=tuple(units),
        channels=channels,
        labels=labels,
    )


class _AsUint64:
    """A large label array read on demand, each read box converted to uint64."""

    dtype = np.dtype(np.uint64)

    def __init__(self, array):
        self.array = array
        self.shape = tuple(array.shape)

    def __getitem__(self, box) -> np.ndarray:
        return np.asarray(self.array[box]).astype(np.uint64)


def neuroglancer_layer(layer: ViewLayer):
    """The neuroglancer layer of a ``ViewLayer``, its data served from this process."""
    import neuroglancer

    meters = [v * METERS_PER_UNIT[u] for v, u in zip(layer.voxel_size, layer.units, strict=True)]
    lead = 1 if layer.channels else 0
    dimensions = neuroglancer.CoordinateSpace(
        names=["c^"] * lead + ["z", "y", "x"],
        units=[""] * lead + ["m"] * 3,
        scales=[1] * lead + meters,
    )
    # Whole voxels of the offset go to the volume; a fraction (OME allows any translation)
    # to the layer's coordinate transform.
    position = [o / v for o, v in zip(layer.offset, layer.voxel_size, strict=True)]
    whole = [math.floor(p + 1e-9) for p in position]
    volume = neuroglancer.LocalVolume(
        layer.data,
        dimensions=dimensions,
        voxel_offset=[0] * lead + whole,
        volume_type="segmentation" if layer.labels else "image",
    )
    source = neuroglancer.LayerDataSource(volume)
    fraction = [0.0] * lead + [p - w for p, w in zip(position, whole, strict=True)]
    if any(abs(f) > 1e-9 for f in fraction):
        rank = len(fraction)
        matrix = [[float(i == j) for j in range(rank)] + [fraction[i]] for i in range(rank)]
        source.transform = neuroglancer.CoordinateSpaceTransform(
            output_dimensions=dimensions, matrix=matrix
        )
    if layer.labels:
        return neuroglancer.SegmentationLayer(source=source)
    options = {"source": source}
    if layer.channels and layer.data.shape[0] == 3:
        options["shader"] = RGB_SHADER
    elif isinstance(layer.data, np.ndarray) and layer.data.size:
        low, high = float(np.min(layer.data)), float(np.max(layer.data))
        if high > low:
            options["shader_controls"] = {"normalized": {"range": [low, high]}}
    return neuroglancer.ImageLayer(**options)


def start_viewer(layers: Sequence[ViewLayer], port: int = 0):
    """A neuroglancer viewer on 127.0.0.1:``port`` (0: any free port) showing ``layers``."""
    import neuroglancer

    neuroglancer.set_server_bind_address("127.0.0.1", port)
    try:
        viewer = neuroglancer.Viewer()
    except OSError as error:
        raise VoltrainError(
            f"--port {port}: cannot serve on 127.0.0.1 ({error.strerror})"
        ) from None
    with viewer.txn() as state:
        for layer in layers:
            state.layers[layer.name] = neuroglancer_layer(layer)
            state.layers[layer.name].visible = layer.visible
        state.layout = "4panel"
    return viewer


def view(
    paths: Sequence[str],
    port: int = 0,
    open_browser: bool = True,
    serve_seconds: float | None = None,
) -> str:
    """Show ``paths`` in neuroglancer and serve until Ctrl-C (or ``serve_seconds``);
    prints the viewer's URL and returns it."""
    if not 0 <= port <= 65535:
        raise VoltrainError(f"--port {port}: must be between 0 and 65535")
    layers = find_layers(paths)
    viewer = start_viewer(layers, port)
    url = viewer.get_viewer_url()
    print(f"neuroglancer: {url}", flush=True)
    for layer in layers:
        kind = "segmentation" if layer.labels else "image"
        size = "x".join(f"{v:g}" for v in layer.voxel_size)
        at = ",".join(f"{o:g}" for o in layer.offset)
        print(f"  {layer.name}: {kind}, voxel {size} {layer.units[0]}, offset {at}", flush=True)
    if open_browser:
        webbrowser.open(url)
    deadline = None if serve_seconds is None else time.monotonic() + serve_seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        import neuroglancer

        neuroglancer.stop()
    return url
