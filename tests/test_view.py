"""voltrain view: a neuroglancer server on 127.0.0.1 whose every layer lies in its world place."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr
from funlib.persistence import prepare_ds

from voltrain.cli import main
from voltrain.io.write import Placement, create_image
from voltrain.run.snapshot import SnapshotArray, write_snapshot

NM = 1e-9


@pytest.fixture
def inputs(tmp_path) -> dict:
    """A run directory with two snapshots, an OME-NGFF prediction in micrometers and a
    plain funlib array; each at its own place."""
    run = tmp_path / "run"
    rng = np.random.default_rng(0)
    for iteration in (10, 20):
        write_snapshot(
            run / "snapshots.zarr",
            iteration,
            {
                "raw": SnapshotArray(rng.random((12, 12, 12), np.float32), (80, 40, 40), (8, 4, 4)),
                "gt": SnapshotArray(rng.integers(0, 5, (4, 4, 4)), (112, 56, 56), (8, 4, 4)),
                "prediction": SnapshotArray(rng.random((3, 4, 4, 4)), (112, 56, 56), (8, 4, 4)),
            },
        )
    prediction = tmp_path / "out.zarr" / "affs"
    create_image(
        zarr.open_group(tmp_path / "out.zarr", mode="w"),
        "affs",
        (3, 6, 6, 6),
        np.float32,
        Placement.of((2, 2, 2), (10, 20, 30), ["micrometer"] * 3),
    )
    plain = tmp_path / "plain.zarr" / "seg"
    seg = prepare_ds(plain, (5, 5, 5), offset=(6, 6, 6), voxel_size=(3, 3, 3), dtype=np.uint32)
    seg[seg.roi] = rng.integers(1, 2**32 - 1, (5, 5, 5), dtype=np.uint32)
    expected = {  # layer -> (voxel size in meters, voxel offset)
        "raw": ([8 * NM, 4 * NM, 4 * NM], [10, 10, 10]),
        "gt": ([8 * NM, 4 * NM, 4 * NM], [14, 14, 14]),
        "prediction": ([1, 8 * NM, 4 * NM, 4 * NM], [0, 14, 14, 14]),
        "affs": ([1, 2e-6, 2e-6, 2e-6], [0, 5, 10, 15]),
        "seg": ([3 * NM, 3 * NM, 3 * NM], [2, 2, 2]),
    }
    return {"paths": [run, prediction, plain], "expected": expected}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _read_url(process: subprocess.Popen, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("neuroglancer: "):
            return line.split()[1]
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no URL printed; stderr: {process.stderr.read()}")


def _served_state(url: str) -> dict:
    """The viewer state, read as the browser reads it: from the server's event stream."""
    base, token = url.split("/v/")
    events = f"{base}/events/{token.strip('/')}?c=test&gc=&gs="
    with urllib.request.urlopen(events, timeout=30) as stream:
        for raw_line in stream:
            line = raw_line.decode().strip()
            if line.startswith("data: "):
                message = json.loads(line.removeprefix("data: "))
                if message["k"] == "s":
                    return message["s"]
    raise AssertionError("the server sent no viewer state")


def _info(url: str, source: str) -> dict:
    base = url.split("/v/")[0]
    key = source.removeprefix("python://volume/")
    with urllib.request.urlopen(f"{base}/neuroglancer/info/{key}", timeout=30) as response:
        return json.loads(response.read())


def test_every_served_layer_has_its_voxel_size_and_offset(inputs):
    port = _free_port()
    command = [sys.executable, "-m", "voltrain", "view", *map(str, inputs["paths"])]
    command += ["--port", str(port), "--no-browser", "--serve-seconds", "120"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        url = _read_url(process, 120)
        assert url.startswith(f"http://127.0.0.1:{port}/v/")
        state = _served_state(url)
        layers = {layer["name"]: layer for layer in state["layers"]}
        assert set(layers) == set(inputs["expected"])  # the latest snapshot, once
        kinds = {name: layer["type"] for name, layer in layers.items()}
        assert kinds == {
            "raw": "image",
            "gt": "segmentation",
            "prediction": "image",
            "affs": "image",
            "seg": "segmentation",
        }
        for name, (scales, voxel_offset) in inputs["expected"].items():
            info = _info(url, layers[name]["source"][0]["url"])
            space = info["coordinateSpace"]
            np.testing.assert_allclose([s for s, _ in space.values()], scales, rtol=1e-9)
            assert [unit for _, unit in space.values()][-3:] == ["m", "m", "m"]
            assert list(space)[-3:] == ["z", "y", "x"]
            assert [int(v) for v in info["voxelOffset"]] == voxel_offset, name
        assert layers["gt"].get("visible", True) and layers["raw"].get("visible", True)
        process.send_signal(signal.SIGINT)  # Ctrl-C ends serving quietly
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.mark.parametrize("case", ["missing", "not zarr", "empty group"])
def test_a_path_that_is_no_array_or_run_is_one_line_exit_2(case, tmp_path, capsys):
    path = tmp_path / "thing"
    if case == "not zarr":
        path.mkdir()
        (path / "notes.txt").write_text("hello")
    elif case == "empty group":
        zarr.open_group(path, mode="w").create_group("nothing")
    assert main(["view", str(path), "--no-browser", "--serve-seconds", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err


def test_a_run_directory_shows_its_latest_snapshot(inputs):
    from voltrain.view import find_layers

    run = Path(inputs["paths"][0])
    layers = find_layers([str(run)])
    assert [layer.name for layer in layers] == ["raw", "gt", "prediction"]
    assert layers[1].data.dtype == np.uint64
    assert layers[0].offset == (80, 40, 40)


def test_a_port_in_use_is_one_line_exit_2(inputs, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["view", str(inputs["paths"][0]), "--port", str(port), "--no-browser"]
        assert main([*args, "--serve-seconds", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--port {port}" in err


def test_a_large_label_array_is_served_on_demand_as_uint64(inputs, monkeypatch):
    from voltrain import view

    monkeypatch.setattr(view, "IN_MEMORY_BYTES", 0)  # as if it were larger than memory
    (layer,) = view.find_layers([str(inputs["paths"][2])])
    assert not isinstance(layer.data, np.ndarray) and layer.labels
    volume = view.neuroglancer_layer(layer).source[0].url
    start, end = np.zeros(3, np.int64), np.full(3, 5, np.int64)
    encoded, _ = volume.get_encoded_subvolume("npz", start, end, "1,1,1")  # as browsers ask
    served = np.load(io.BytesIO(zlib.decompress(encoded)))
    stored = zarr.open_array(inputs["paths"][2])[:]
    assert served.dtype == np.uint64 and stored.dtype == np.uint32
    np.testing.assert_array_equal(served, stored)


def test_an_ome_0_4_image_from_another_tool_is_placed_by_all_its_transforms(tmp_path):
    from voltrain import view
    from voltrain.view import find_layers

    group = zarr.open_group(tmp_path / "em.zarr", mode="w", zarr_format=2)
    group.create_array("s1", shape=(4, 4, 4), dtype=np.uint8)
    axes = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]
    level = [
        {"type": "scale", "scale": [2, 2, 2]},
        {"type": "translation", "translation": [1, 1, 1]},
    ]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [{"path": "s1", "coordinateTransformations": level}],
            "coordinateTransformations": [{"type": "scale", "scale": [4, 4, 4]}],
        }
    ]
    (layer,) = find_layers([str(tmp_path / "em.zarr")])
    assert layer.voxel_size == (8, 8, 8) and layer.offset == (4, 4, 4)
    assert layer.units == ("nanometer",) * 3 and not layer.labels
    # Half a voxel: four of the offset's units lie in the layer's transform.
    source = view.neuroglancer_layer(layer).source[0]
    assert [int(v) for v in source.url.voxel_offset] == [0, 0, 0]
    assert [row[-1] for row in source.transform.matrix.tolist()] == [0.5, 0.5, 0.5]
