"""Volumes served over S3 (a local moto server) and HTTP (a local file server) read, and
train, like local ones; an unreachable store is a one-line error."""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from pathlib import Path

import boto3
import h5py
import numpy as np
import pytest
import torch
import yaml
import zarr
from funlib.geometry import Coordinate, Roi
from funlib.persistence import open_ds
from io_writers import downsample, write_ome_image
from moto.server import ThreadedMotoServer

from tests.helpers import experiment_dict
from voltrain.cli import main
from voltrain.errors import DataError
from voltrain.experiment import load_config
from voltrain.io.read import ArraySource, open_source
from voltrain.io.stores import remote_url_and_options
from voltrain.io.write import level_path
from voltrain.models.unet import build_model
from voltrain.run.checkpoint import save_checkpoint

BUCKET = "voltrain-test"


@pytest.fixture(scope="module")
def ome_container(volume, tmp_path_factory) -> Path:
    """The synthetic volume as an OME-NGFF 0.5 container: raw, labels, mask, two levels."""
    container = tmp_path_factory.mktemp("ome") / "cells.ome.zarr"
    zarr.open_group(str(container), mode="w")
    for name in ("raw", "labels", "mask"):
        array = open_ds(str(volume / name))
        data = array[array.roi]
        levels = [data, downsample(data)]
        # few, large chunks: each is one request to the server
        write_ome_image(
            container / name, levels, tuple(array.voxel_size), array.roi.offset, chunk=32
        )
    return container


@pytest.fixture(scope="module")
def s3_url(ome_container):
    """``s3://`` URL of the container on a local S3 server; the environment points to it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET, ACL="public-read")
        for file in ome_container.rglob("*"):
            if file.is_file():
                key = f"{ome_container.name}/{file.relative_to(ome_container)}"
                client.upload_file(str(file), BUCKET, key, ExtraArgs={"ACL": "public-read"})
        yield f"s3://{BUCKET}/{ome_container.name}"
    server.stop()


@pytest.fixture(scope="module")
def http_url(ome_container):
    """``http://`` URL of the container, served from disk on 127.0.0.1."""
    handler = functools.partial(_QuietHandler, directory=str(ome_container.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{ome_container.name}"
    server.shutdown()
    thread.join(timeout=10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _expected(volume: Path, name: str, level: int) -> np.ndarray:
    array = open_ds(str(volume / name))
    data = array[array.roi]
    return downsample(data) if level else data


def test_ome_level_read_from_s3_with_credentials_from_the_environment(s3_url, volume):
    array = open_source(ArraySource(path=f"{s3_url}/labels", scale="s1"), "data.train[0].gt")
    assert array.voxel_size == Coordinate(16, 16, 16)
    assert array.roi.offset == Coordinate(16, 32, 48)
    assert array.units == ["nanometer"] * 3
    np.testing.assert_array_equal(array[array.roi], _expected(volume, "labels", 1))


def test_public_bucket_is_read_without_credentials(s3_url, volume, monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    array = open_source(f"{s3_url}/raw/s0", "raw")
    assert array.voxel_size == Coordinate(8, 8, 8)
    np.testing.assert_array_equal(array[array.roi], _expected(volume, "raw", 0))


def test_ome_level_read_over_http(http_url, volume):
    array = open_source(ArraySource(path=f"{http_url}/raw", voxel_size=[16, 16, 16]), "raw")
    assert array.roi.offset == Coordinate(16, 32, 48)
    np.testing.assert_array_equal(array[array.roi], _expected(volume, "raw", 1))


def test_missing_remote_array_names_the_url(http_url):
    with pytest.raises(DataError, match=r"raw: no zarr array or group at 'http://.*/nope'"):
        open_source(f"{http_url}/nope", "raw")


def test_train_on_ome_zarr_served_from_s3(s3_url, write_config, tmp_path):
    config = experiment_dict(Path("unused"), num_data_fetchers=0, max_steps=2)
    config["data"]["train"][0].update(
        raw={"path": f"{s3_url}/raw", "scale": "s0"},
        gt={"path": f"{s3_url}/labels", "voxel_size": [8, 8, 8]},
        mask=f"{s3_url}/mask/s0",
    )
    out = tmp_path / "run"
    assert main(["train", str(write_config(config)), "--out", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in rows)


@pytest.mark.parametrize(
    "source, expected",
    [
        ({"path": "s3://{bucket}/cells.ome.zarr/raw", "scale": "s7"}, r"no OME-NGFF level 's7'"),
        ("s3://{bucket}/absent.zarr/raw", r"no zarr array or group at 's3://.*absent.zarr/raw'"),
        ("http://127.0.0.1:9/cells.zarr/raw", r"cannot read 'http://127.0.0.1:9/cells.zarr/raw'"),
    ],
)
def test_bad_remote_input_one_line_exit_2_no_run_directory(
    s3_url, source, expected, write_config, tmp_path, capsys
):
    if isinstance(source, dict):
        source = {**source, "path": source["path"].format(bucket=BUCKET)}
    else:
        source = source.format(bucket=BUCKET)
    config = experiment_dict(Path("unused"))
    config["data"]["train"][0].update(raw=source, gt=f"{s3_url}/labels", mask=None)
    out = tmp_path / "run"
    code = main(["train", str(write_config(config)), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert pytest.importorskip("re").search(r"data.train\[0\].raw: .*" + expected, err), err
    assert not out.exists()


def test_unreachable_s3_endpoint_is_one_line_error(s3_url, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(DataError, match=r"raw: cannot read 's3://.*'.*127.0.0.1:9"):
        open_source(f"{s3_url}/raw", "raw")
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"


def test_predict_input_from_s3_ome_level_equals_local_input(s3_url, volume, tmp_path):
    """``voltrain predict --input s3://.../raw/s0`` predicts what the local copy gives."""
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(experiment_dict(volume)))
    torch.manual_seed(0)
    model = build_model(load_config(config_path).model, 1, 3)
    checkpoint = save_checkpoint(tmp_path, 1, {"model": model.state_dict(), "iteration": 1})
    roi = "16,32,48:160,160,160"
    outputs = {}
    for name, source in (("local", str(volume / "raw")), ("s3", f"{s3_url}/raw/s0")):
        outputs[name] = tmp_path / f"{name}.zarr" / "pred"
        args = ["predict", str(config_path), "--checkpoint", str(checkpoint), "--input", source]
        assert main([*args, "--output", str(outputs[name]), "--roi", roi, "--no-progress"]) == 0
    local, remote = (open_ds(level_path(outputs[name])) for name in ("local", "s3"))
    assert remote.roi == local.roi == Roi((16, 32, 48), (160, 160, 160))
    assert local[local.roi].std() > 0.01  # the comparison below means something
    np.testing.assert_array_equal(remote[remote.roi], local[local.roi])


def test_public_gcs_bucket_without_gcsfs_is_read_over_https(monkeypatch):
    """Without gcsfs and credentials, gs:// reads go to Google's public HTTPS endpoint."""
    import builtins

    real_import = builtins.__import__

    def no_gcsfs(name, *args, **kwargs):
        if name == "gcsfs":
            raise ImportError("No module named 'gcsfs'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gcsfs)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    url, _ = remote_url_and_options("gs://public-bucket/cells.zarr/raw", "raw")
    assert url == "https://storage.googleapis.com/public-bucket/cells.zarr/raw"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/secret.json")
    with pytest.raises(DataError, match=r"raw: reading 'gs://public-bucket/.*' with .*gcsfs"):
        remote_url_and_options("gs://public-bucket/cells.zarr/raw", "raw")


def test_cremi_hdf5_read_from_s3(s3_url, tmp_path):
    """A CREMI-style HDF5 file in a bucket opens with its metadata and reads its voxels."""
    labels = np.arange(32**3, dtype=np.uint64).reshape((32,) * 3)
    path = tmp_path / "sample_A.hdf"
    with h5py.File(path, "w") as file:
        file.create_dataset("volumes/labels/neuron_ids", data=labels, chunks=(16, 16, 16))
        file["volumes/labels/neuron_ids"].attrs.update(resolution=[40, 4, 4], offset=[40, 0, 0])
    boto3.client("s3").upload_file(str(path), BUCKET, "cremi/sample_A.hdf")
    url = f"s3://{BUCKET}/cremi/sample_A.hdf"
    array = open_source(f"{url}/volumes/labels/neuron_ids", "gt")
    assert (array.voxel_size, array.roi.offset) == (Coordinate(40, 4, 4), Coordinate(40, 0, 0))
    np.testing.assert_array_equal(array[array.roi], labels)
    with pytest.raises(DataError, match=r"gt: no such HDF5 file 's3://.*/cremi/absent.hdf'"):
        open_source(f"s3://{BUCKET}/cremi/absent.hdf/volumes/raw", "gt")
