"""Where datasets, checkpoints and searches live: a local path or an object-store URI.

Every place that reads or writes a dataset, a search plan or a run folder goes through
this module, so ``/data/ds`` and ``s3://bucket/ds`` take the same code path (a pyarrow
filesystem and a path inside it). Credentials and the endpoint come from the environment,
as every AWS SDK reads them (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_S3``): pyarrow, Ray
Train and boto3 (MLflow's S3 artifacts) all read those same variables, so no secret is
passed around, pickled, logged or written into a manifest.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from pyarrow import fs as pafs

# scheme://user[:password]@...: credentials inside a location would end up in logs,
# MLflow params and manifests.
_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*@")


class StorageError(ValueError):
    """A location that cannot be used: malformed, unknown scheme, or unreachable."""


def is_uri(location: str | Path) -> bool:
    """``scheme://...`` (``s3://``, ``gs://``, ``file://``), as opposed to a plain local path."""
    return "://" in str(location)


def resolve(location: str | Path) -> str:
    """A local path made absolute (``~`` expanded), or a checked URI without a trailing
    ``/``: the form Ray, pyarrow and the manifests are given."""
    location = str(location)
    if not location.strip():
        raise StorageError("a storage location must not be empty")
    if not is_uri(location):
        return str(Path(location).expanduser().resolve())
    if _USERINFO.match(location):
        raise StorageError(f"{_scheme(location)}:// location with credentials in it: set AWS_ACCESS_KEY_ID / "
                           "AWS_SECRET_ACCESS_KEY in the environment instead")
    if "?" in location:
        raise StorageError(f"{location}: options in a storage URI are not supported; set the endpoint and "
                           "region with AWS_ENDPOINT_URL and AWS_DEFAULT_REGION")
    if not location.split("://", 1)[1].strip("/"):
        raise StorageError(f"{location} names no bucket")
    return location.rstrip("/")


def join(location: str | Path, *parts: str) -> str:
    """``location/part/...`` for a local path and a URI alike."""
    location = resolve(location)
    return posixpath.join(location, *parts) if is_uri(location) else os.path.join(location, *parts)


def split(location: str | Path) -> tuple[str, str]:
    """``(parent, name)`` of a location; refuses a bucket's root (it has no parent)."""
    location = resolve(location)
    if not is_uri(location):
        path = Path(location)
        return str(path.parent), path.name
    scheme, rest = location.split("://", 1)
    if "/" not in rest:
        raise StorageError(f"{location} is a bucket's root; name a folder inside it ({location}/NAME)")
    parent, name = rest.rsplit("/", 1)
    return f"{scheme}://{parent}", name


def filesystem(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding ``location`` and the path inside it. Local paths get
    the local filesystem explicitly, which also skips Ray's filesystem detection."""
    location = resolve(location)
    if not is_uri(location):
        return pafs.LocalFileSystem(), location
    try:
        return pafs.FileSystem.from_uri(location)
    except (OSError, ValueError) as exc:  # unknown scheme; bucket not found; no endpoint or credentials
        raise StorageError(f"cannot open {location}: {exc}") from exc


def display(fs: pafs.FileSystem, path: str) -> str:
    """A location as the user wrote it: pyarrow paths inside an object store drop the scheme."""
    kind = fs.type_name.removeprefix("py::fsspec+")  # Ray may wrap an fsspec filesystem
    return path if kind == "local" else f"{'gs' if kind == 'gcs' else kind}://{path}"


def _info(location: str | Path) -> pafs.FileInfo:
    fs, path = filesystem(location)
    try:
        return fs.get_file_info(path)
    except OSError as exc:  # e.g. access denied
        raise StorageError(f"cannot read {resolve(location)}: {exc}") from exc


def exists(location: str | Path) -> bool:
    """A file, or a folder (in an object store: a prefix that holds objects)."""
    return _info(location).type != pafs.FileType.NotFound


def is_file(location: str | Path) -> bool:
    return _info(location).type == pafs.FileType.File


def is_dir(location: str | Path) -> bool:
    return _info(location).type == pafs.FileType.Directory


def is_absent_or_empty(location: str | Path) -> bool:
    kind = _info(location).type
    if kind == pafs.FileType.NotFound:
        return True
    if kind != pafs.FileType.Directory:
        return False
    fs, path = filesystem(location)
    return not fs.get_file_info(pafs.FileSelector(path, recursive=False))


def read_text(location: str | Path) -> str:
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as stream:
        return stream.read().decode()


def write_text(location: str | Path, text: str) -> None:
    """Write a file, creating its folder (object stores need none)."""
    fs, path = filesystem(location)
    fs.create_dir(posixpath.dirname(path) if is_uri(location) else os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(text.encode())


def list_files(location: str | Path) -> list[str]:
    """Every file under a folder, as paths relative to it, sorted."""
    fs, root = filesystem(location)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(posixpath.relpath(info.path, root) for info in infos if info.type == pafs.FileType.File)


def copy_file(source: str | Path, destination: str | Path) -> None:
    """Copy one file within a filesystem (a server-side copy in an object store)."""
    fs, source_path = filesystem(source)
    fs.copy_file(source_path, filesystem(destination)[1])


def remove_tree(location: str | Path) -> None:
    """Delete a folder and everything under it; nothing if it is absent."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def _scheme(location: str) -> str:
    return location.split("://", 1)[0]
