"""Where a volume lives: local paths and remote URLs, and the stores that read them.

A volume path names a container and a key inside it: ``data.zarr/raw``,
``sample_A.hdf/volumes/raw``, ``data.n5/volumes/raw`` or ``s3://bucket/data.zarr/raw``.
Remote zarr is read through fsspec (zarr's ``FsspecStore``): ``s3://`` with credentials
from the environment (``AWS_*`` variables or ``~/.aws``) and anonymously when there are
none, ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for S3-compatible servers;
``gs://`` through gcsfs when installed, else anonymously over Google's public HTTPS
endpoint; ``http(s)://`` directly. Network waits are bounded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from voltrain.errors import DataError

REMOTE_SCHEMES = ("s3", "gs", "gcs", "http", "https")
CONTAINER_SUFFIXES = {".zarr": "zarr", ".n5": "n5", ".h5": "hdf5", ".hdf": "hdf5", ".hdf5": "hdf5"}
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 120


@dataclass(frozen=True)
class Location:
    """A volume's container and its key inside it.

    Attributes:
        kind: ``zarr``, ``n5`` or ``hdf5``.
        container: local path or URL of the container (for zarr without a ``.zarr`` part:
            the whole path, with an empty key).
        key: the array or group inside the container, '/'-separated, possibly empty.
    """

    kind: str
    container: str
    key: str

    @property
    def remote(self) -> bool:
        return is_url(self.container)


def is_url(path: str) -> bool:
    """Whether ``path`` is a remote URL (``s3://``, ``gs://``, ``http(s)://``)."""
    return path.split("://", 1)[0].lower() in REMOTE_SCHEMES and "://" in path


def locate(path: str) -> Location:
    """Split a volume path into container and key by its first container suffix."""
    if is_url(path):
        scheme, rest = path.split("://", 1)
        prefix, parts = f"{scheme}://", rest.strip("/").split("/")
    else:
        prefix, parts = "", list(Path(path).parts)
    for i, part in enumerate(parts):
        kind = CONTAINER_SUFFIXES.get(PurePosixPath(part).suffix.lower())
        if kind is not None:
            head = parts[: i + 1]
            container = prefix + "/".join(head) if prefix else str(Path(*head))
            return Location(kind, container, "/".join(parts[i + 1 :]))
    return Location("zarr", path, "")


def zarr_store(location: Location, where: str):
    """A read-only zarr store at the container of ``location``."""
    from zarr.storage import FsspecStore, LocalStore

    if not location.remote:
        if not Path(location.container).exists():
            raise DataError(f"{where}: no such container '{location.container}'")
        return LocalStore(location.container, read_only=True)
    url, options = remote_url_and_options(location.container, where)
    try:
        return FsspecStore.from_url(url, storage_options=options, read_only=True)
    except (ImportError, ValueError) as error:
        raise DataError(f"{where}: cannot read '{location.container}': {error}") from None


def remote_url_and_options(url: str, where: str) -> tuple[str, dict]:
    """The fsspec URL and storage options for ``url``: credentials, endpoint, timeouts."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "s3":
        return url, _s3_options()
    if scheme in ("gs", "gcs"):
        try:
            import gcsfs  # noqa: F401
        except ImportError:
            if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
                raise DataError(
                    f"{where}: reading '{url}' with credentials needs gcsfs (pip install gcsfs)"
                ) from None
            # public buckets are served over HTTPS without credentials
            return "https://storage.googleapis.com/" + url.split("://", 1)[1], _http_options()
        token = None if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") else "anon"
        return url, {"token": token, "timeout": READ_TIMEOUT_S}
    return url, _http_options()


def _s3_options() -> dict:
    options: dict = {
        "anon": not _has_aws_credentials(),
        "config_kwargs": {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "read_timeout": READ_TIMEOUT_S,
            "retries": {"max_attempts": 3},
        },
    }
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    return options


def _has_aws_credentials() -> bool:
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE"):
        return True
    if env.get("AWS_WEB_IDENTITY_TOKEN_FILE") or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return True
    files = [env.get("AWS_SHARED_CREDENTIALS_FILE"), str(Path.home() / ".aws" / "credentials")]
    return any(f and Path(f).is_file() for f in files)


def _http_options() -> dict:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    return {"client_kwargs": {"timeout": timeout}}
