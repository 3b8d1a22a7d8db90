"""Writing an output folder safely: build it beside the destination, swap it in, and
replace an existing folder only if this tool wrote it.

A tool's folder carries a marker file (``.jaffnet-<tool>``); ``--overwrite`` never deletes
a folder without it (a home directory, a repository, a source dataset). The new folder
is built as ``.NAME.tmp-<pid>-<hex>`` next to the destination and renamed into place
only once complete; the old one is kept (renamed ``.NAME.old-<pid>-<hex>``) until then.
Leftovers of interrupted runs (their process is gone) are removed on the next run.

In an object store (``s3://bucket/NAME``) the same rules hold, but a prefix cannot be
renamed: once the new folder is complete under its temporary prefix, the old one is
deleted and the new files are copied in (server-side), the marker first and the files
that make the folder readable (``last``, e.g. the manifest) at the end, so a reader
sees the old folder, an unreadable one, or the new one; never a mix. Leftovers there
cannot be told by process id (they may come from another machine) and are left alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path

import psutil

from pipelines import storage

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def marker_name(tool: str) -> str:
    return f".jaffnet-{tool}"


def temporary_sibling(out: Path | str, kind: str = "tmp") -> Path | str:
    """``.NAME.<kind>-<pid>-<hex>`` beside ``out``: a ``Path`` for a local folder, a URI for a URI."""
    parent, name = storage.split(out)
    sibling = storage.join(parent, f".{name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    return sibling if storage.is_uri(out) else Path(sibling)


def clean_leftovers(out: Path | str) -> list[Path]:
    """Remove ``out``'s temporary/old siblings whose creating process no longer runs
    (local folders only, see the module docstring)."""
    removed = []
    if storage.is_uri(out):
        return removed
    out = Path(out)
    if not out.parent.is_dir():
        return removed
    for path in out.parent.iterdir():
        match = _LEFTOVER.match(path.name)
        if match and match["name"] == out.name and not psutil.pid_exists(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def check_replaceable(out: Path | str, tool: str, overwrite: bool, sources: tuple[Path, ...] = (),
                      legacy_marker: str | None = None) -> None:
    """Raise ``FileExistsError`` unless ``out`` may be written: absent or empty, or (with
    ``overwrite``) a folder ``tool`` wrote that holds none of ``sources``. ``legacy_marker``:
    a file that identifies folders ``tool`` wrote before markers existed."""
    out = storage.resolve(out)
    storage.split(out)  # refuses a bucket's root: the new folder is built beside the destination
    if not storage.is_uri(out):
        _check_not_a_source(Path(out), sources)
    if storage.is_absent_or_empty(out):
        return
    if not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite to replace it")
    markers = [marker_name(tool)] + ([legacy_marker] if legacy_marker else [])
    if not any(storage.is_file(storage.join(out, marker)) for marker in markers):
        raise FileExistsError(f"{out} was not written by `jaffnet {tool}` (no {marker_name(tool)} marker); "
                              "refusing to replace it: choose another --out or remove it yourself")


def _check_not_a_source(out: Path, sources: tuple[Path, ...]) -> None:
    for source in sources:
        source = Path(source).resolve()
        if source == out or out in source.parents:
            raise FileExistsError(f"{source} is inside the output {out}; refusing to replace its own source")


def publish(tmp: Path | str, out: Path | str, tool: str, last: tuple[str, ...] = ()) -> None:
    """Mark ``tmp`` as ``tool``'s and put it in place of ``out``. Locally: rename, with an
    old ``out`` moved aside first and deleted only once the new one is in place. In an
    object store: replace ``out``'s files by ``tmp``'s, the relative paths in ``last`` last."""
    storage.write_text(storage.join(tmp, marker_name(tool)), f"written by jaffnet {tool}\n")
    if storage.is_uri(out):
        _copy_into_place(str(tmp), str(out), tool, last)
        return
    tmp, out = Path(tmp), Path(out)
    if out.exists():
        old = temporary_sibling(out, "old")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def _copy_into_place(tmp: str, out: str, tool: str, last: tuple[str, ...]) -> None:
    files = storage.list_files(tmp)
    ordered = ([marker_name(tool)] + [f for f in files if f != marker_name(tool) and f not in last]
               + [f for f in last if f in files])
    storage.remove_tree(out)  # check_replaceable allowed it: empty, or this tool's (marker)
    for relative in ordered:
        storage.copy_file(storage.join(tmp, relative), storage.join(out, relative))


def discard(tmp: Path | str) -> None:
    """Remove a temporary folder, ignoring errors (it runs while another error may be raised)."""
    if storage.is_uri(tmp):
        with contextlib.suppress(OSError, ValueError):
            storage.remove_tree(tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
