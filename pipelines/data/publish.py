"""Writing an output folder safely: build it beside the destination, swap it in, and
replace an existing folder only if this tool wrote it.

A tool's folder carries a marker file (``.jaffnet-<tool>``); ``--overwrite`` never deletes
a folder without it (a home directory, a repository, a source dataset). The new folder
is built as ``.NAME.tmp-<pid>-<hex>`` next to the destination and renamed into place
only once complete; the old one is kept (renamed ``.NAME.old-<pid>-<hex>``) until then.
Leftovers of interrupted runs (their process is gone) are removed on the next run.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import psutil

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def marker_name(tool: str) -> str:
    return f".jaffnet-{tool}"


def temporary_sibling(out: Path, kind: str = "tmp") -> Path:
    return out.parent / f".{out.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def clean_leftovers(out: Path) -> list[Path]:
    """Remove ``out``'s temporary/old siblings whose creating process no longer runs."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for path in out.parent.iterdir():
        match = _LEFTOVER.match(path.name)
        if match and match["name"] == out.name and not psutil.pid_exists(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def check_replaceable(out: Path, tool: str, overwrite: bool, sources: tuple[Path, ...] = (),
                      legacy_marker: str | None = None) -> None:
    """Raise ``FileExistsError`` unless ``out`` may be written: absent or empty, or (with
    ``overwrite``) a folder ``tool`` wrote that holds none of ``sources``. ``legacy_marker``:
    a file that identifies folders ``tool`` wrote before markers existed."""
    out = out.resolve()
    for source in sources:
        source = Path(source).resolve()
        if source == out or out in source.parents:
            raise FileExistsError(f"{source} is inside the output {out}; refusing to replace its own source")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite to replace it")
    if not (out / marker_name(tool)).is_file() and not (legacy_marker and (out / legacy_marker).is_file()):
        raise FileExistsError(f"{out} was not written by `jaffnet {tool}` (no {marker_name(tool)} marker); "
                              "refusing to replace it: choose another --out or remove it yourself")


def publish(tmp: Path, out: Path, tool: str) -> None:
    """Mark ``tmp`` as ``tool``'s and rename it to ``out``; an old ``out`` is moved aside
    first and deleted only once the new one is in place."""
    (tmp / marker_name(tool)).write_text(f"written by jaffnet {tool}\n")
    if out.exists():
        old = temporary_sibling(out, "old")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
