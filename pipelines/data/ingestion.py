"""`jaffnet ingest`: an original download layout -> a validated Parquet dataset.

Ray Data decodes and validates the pairs in parallel (``map_batches``) and writes the
rows with ``write_parquet``. Output appears atomically: everything is written into a
hidden temporary folder beside the destination, which is renamed into place only once
complete, so an interrupted run never leaves half a dataset behind.

Dataset layout::

    DATASET/manifest.json
    DATASET/data/*.parquet   # id, source_format, defect_class, split, height, width,
                             # image (PNG bytes), mask (PNG bytes, 0/255), has_defect
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipelines import storage
from pipelines.codec import InvalidSample, encode_png, validate_pair
from pipelines.data.layouts import Rejection, discover
from pipelines.data.publish import check_replaceable, clean_leftovers, discard, publish, temporary_sibling
from pipelines.data.splits import SPLITS, assign_splits, check_fractions

DATA_FOLDER = "data"
MANIFEST = "manifest.json"
INGEST_TOOL = "ingest"
MANIFEST_VERSION = 1
# Several files even for small datasets: each file is a read task, so readers (and the
# augmentation after them) run in parallel instead of in one task per dataset.
ROWS_PER_FILE = 64
# Decode tasks: at most this many, and no more than run at once (one wave). Each task costs a fixed
# ~0.1-0.2 s, so on a small machine a few larger tasks finish sooner: 1664 demo frames on 2 CPUs took
# 12.3-14.1 s as 64 tasks, 9.6-11.8 s as 16, 7.4-9.6 s as 4 (docs/benchmarks/demo.md). A cluster still gets 64.
MAX_DECODE_TASKS = 64


class IngestError(RuntimeError):
    """Nothing was written: no valid sample, rejections under ``strict``, or ``out`` exists."""

    def __init__(self, message: str, rejected: list[dict] | None = None):
        super().__init__(message)
        self.rejected = rejected or []


@dataclass
class IngestResult:
    dataset_dir: Path | str  # a Path, or the URI of a dataset in an object store
    manifest: dict

    @property
    def num_rejected(self) -> int:
        return len(self.manifest["rejected"])


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def encoded_sample(image: np.ndarray, mask: np.ndarray) -> dict:
    """A validated image and its 0/255 mask as a dataset row's stored columns (PNG bytes and what
    the manifest's content hash is made of)."""
    image_png, mask_png = encode_png(image), encode_png(mask)
    return {"height": image.shape[0], "width": image.shape[1], "image": image_png, "mask": mask_png,
            "has_defect": bool(mask.any()), "digest": hashlib.sha256(image_png + mask_png).hexdigest()}


def decode_and_validate(batch: dict[str, np.ndarray], source_format: str,
                        bit_depth: int | None = None) -> dict[str, np.ndarray]:
    """Ray Data UDF: file paths -> encoded, validated rows (``error`` says why not)."""
    columns = {name: [] for name in ("id", "source_format", "defect_class", "official_split",
                                     "height", "width", "image", "mask", "has_defect",
                                     "digest", "error", "file")}
    for i, sample_id in enumerate(batch["id"]):
        image_path, mask_path = batch["image_path"][i], batch["mask_path"][i]
        defect_class, official = batch["defect_class"][i], batch["official_split"][i]
        error, file = "", ""
        try:
            image_bytes = _read(image_path)
            mask_bytes = _read(mask_path) if mask_path else None
            sample = encoded_sample(*validate_pair(image_bytes, mask_bytes, bit_depth))
        except InvalidSample as exc:
            sample, error = _NO_SAMPLE, str(exc)
            file = mask_path if exc.part == "mask" else image_path
        except OSError as exc:
            sample = _NO_SAMPLE
            error, file = f"unreadable: {exc.strerror or exc}", exc.filename or image_path
        if not defect_class:  # no class given by the layout: name it from the mask
            defect_class = "defect" if sample["has_defect"] else "none"
        row = {"id": sample_id, "source_format": source_format, "defect_class": defect_class,
               "official_split": official, **sample, "error": error, "file": file}
        for name, values in columns.items():
            values.append(row[name])
    out = {name: np.array(values, dtype=object) for name, values in columns.items()}
    out["height"] = out["height"].astype(np.int32)
    out["width"] = out["width"].astype(np.int32)
    out["has_defect"] = out["has_defect"].astype(bool)
    return out


_NO_SAMPLE = {"height": 0, "width": 0, "image": b"", "mask": b"", "has_defect": False,
              "digest": hashlib.sha256(b"").hexdigest()}


def keep_valid_with_split(batch: dict[str, np.ndarray], splits: dict[str, str]) -> dict[str, np.ndarray]:
    """Ray Data UDF: drop rejected rows, attach the split, drop bookkeeping columns."""
    keep = batch["error"] == ""
    out = {name: batch[name][keep] for name in ("id", "source_format", "defect_class", "height",
                                                 "width", "image", "mask", "has_defect")}
    out["split"] = np.array([splits[i] for i in out["id"]], dtype=object)
    return out


def _content_hash(rows: list[dict]) -> str:
    """Identifies the dataset's content and splits, not where or when it was written."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r["id"]):
        digest.update(f"{row['id']}\t{row['defect_class']}\t{row['split']}\t{row['digest']}\n".encode())
    return digest.hexdigest()


def _counts(rows: list[dict]) -> dict:
    per_split = {split: Counter() for split in SPLITS}
    for row in rows:
        per_split[row["split"]][row["defect_class"]] += 1
    return {split: dict(sorted(counter.items())) for split, counter in per_split.items()}


def ingest(src: str | Path, out: str | Path, source_format: str, *, seed: int = 0,
           val_fraction: float = 0.15, test_fraction: float = 0.15, overwrite: bool = False,
           strict: bool = False, num_cpus: float = 0.5, batch_size: int = 16,
           bit_depth: int | None = None) -> IngestResult:
    """Read ``src`` in ``source_format`` layout and write the Parquet dataset ``out`` (a
    local folder, or a URI such as ``s3://bucket/ds``: see ``pipelines.storage``).

    Bad files are rejected (listed in the manifest), never fatal; :class:`IngestError`
    only when nothing valid remains, ``out`` exists without ``overwrite``, or ``strict``
    is set and any file was rejected (then nothing is written).
    Runs on the Ray instance the entry point started (``pipelines.runtime.init_ray``); without
    one, Ray Data starts a default local instance.
    """
    import ray

    src = Path(src).resolve()
    check_fractions(val_fraction, test_fraction)
    if isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float)) or not 0 < num_cpus < float("inf"):
        raise ValueError(f"num_cpus (CPUs per decode task) must be a finite number > 0, got {num_cpus!r}")
    out = prepare_output(out, overwrite, sources=(src,))
    start = time.perf_counter()
    found = discover(source_format, src)
    rejected = list(found.rejected)
    # Empty strings, not None: an all-None column would reach the UDF as NaN floats.
    records = [{key: value or "" for key, value in asdict(r).items()} for r in found.records]

    valid_rows: list[dict] = []
    tmp = temporary_sibling(out)
    try:
        if records:
            blocks = max(1, min(len(records) // batch_size, decode_tasks(num_cpus)))
            decoded = (
                ray.data.from_items(records, override_num_blocks=blocks)
                .map_batches(decode_and_validate, fn_kwargs={"source_format": source_format, "bit_depth": bit_depth},
                             batch_size=batch_size, num_cpus=num_cpus)
                .materialize()  # decode once; read the small columns, then write
            )
            summary = decoded.select_columns(
                ["id", "defect_class", "official_split", "has_defect", "digest", "error", "file"]).take_all()
            rejected += [Rejection(r["file"], r["error"]) for r in summary if r["error"]]
            valid_rows = [r for r in summary if not r["error"]]
        rejected_rows = sorted((_relative(r, src) for r in rejected), key=lambda r: r["file"])
        check_outcome(valid_rows, rejected_rows, strict, f"{src}", "files")
        splits = split_rows(valid_rows, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
        data_fs, data_path = data_location(out, tmp)
        decoded.map_batches(keep_valid_with_split, fn_kwargs={"splits": splits},
                            num_cpus=num_cpus).write_parquet(data_path, filesystem=data_fs,
                                                             max_rows_per_file=ROWS_PER_FILE)
        arguments = {"src": str(src), "out": str(out), "format": source_format, "seed": seed,
                     "val_fraction": val_fraction, "test_fraction": test_fraction, "bit_depth": bit_depth}
        manifest = publish_dataset(tmp, out, source_format, arguments, valid_rows, rejected_rows, start)
    finally:
        discard(tmp)
    return IngestResult(out, manifest)


def decode_tasks(num_cpus: float) -> int:
    """How many decode tasks of ``num_cpus`` each an ingestion splits its files into: as many as
    the running Ray instance's CPUs run at once (this machine's when none runs yet: Ray Data then
    starts a local one), at most ``MAX_DECODE_TASKS``."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else os.cpu_count() or 1
    return max(1, min(MAX_DECODE_TASKS, int(cpus / num_cpus)))


# --- what every source format shares: the output, the checks, the splits, the manifest --------------


def prepare_output(out: str | Path, overwrite: bool, sources: tuple[Path, ...]) -> Path | str:
    """``out`` resolved, checked to be writable (``--overwrite`` only ever replaces a dataset this tool
    wrote, never one of its own ``sources``), and cleared of interrupted runs' leftovers."""
    out = storage.resolve(out) if storage.is_uri(out) else Path(out).resolve()
    try:
        check_replaceable(out, INGEST_TOOL, overwrite, sources=sources, legacy_marker=MANIFEST)
    except FileExistsError as exc:
        raise IngestError(str(exc)) from None
    clean_leftovers(out)
    return out


def check_outcome(valid_rows: list[dict], rejected_rows: list[dict], strict: bool, source: str,
                  what: str) -> None:
    """Nothing is written when no row is valid, or with ``strict`` when any ``what`` was rejected."""
    if not valid_rows:
        raise IngestError(f"no valid samples in {source} ({len(rejected_rows)} {what} rejected)", rejected_rows)
    if strict and rejected_rows:
        raise IngestError(f"--strict: {len(rejected_rows)} {what} rejected, nothing written", rejected_rows)


def split_rows(rows: list[dict], *, val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Assign (and set in each row) its split, stratified by class; an ``official_split`` is kept."""
    splits = assign_splits(((r["id"], r["defect_class"], r.get("official_split") or None) for r in rows),
                           val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    for row in rows:
        row["split"] = splits[row["id"]]
    return splits


def data_location(out: Path | str, tmp: Path | str):
    """(filesystem, path) of the Parquet folder of the dataset being built in ``tmp``."""
    if not storage.is_uri(out):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    return storage.filesystem(storage.join(tmp, DATA_FOLDER))


def publish_dataset(tmp: Path | str, out: Path | str, source_format: str, arguments: dict, valid_rows: list[dict],
                    rejected_rows: list[dict], start: float, **extra) -> dict:
    """Write the manifest of the rows written under ``tmp`` (``extra``: a format's own fields) and put
    the dataset in place of ``out``; returns the manifest."""
    manifest = {
        "version": MANIFEST_VERSION,
        "source_format": source_format,
        "arguments": arguments,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "content_hash": _content_hash(valid_rows),
        "num_samples": len(valid_rows),
        "num_defect_free": sum(1 for r in valid_rows if not r["has_defect"]),
        "totals": {split: sum(1 for r in valid_rows if r["split"] == split) for split in SPLITS},
        "counts": _counts(valid_rows),
        "num_rejected": len(rejected_rows),
        "rejected": rejected_rows,
        **extra,
        "seconds": round(time.perf_counter() - start, 2),
    }
    storage.write_text(storage.join(tmp, MANIFEST), json.dumps(manifest, indent=2) + "\n")
    publish(tmp, out, INGEST_TOOL, last=(MANIFEST,))  # the manifest makes a dataset readable
    return manifest


def _relative(rejection: Rejection, src: Path) -> dict:
    path = Path(rejection.file)
    try:
        path = path.relative_to(src)
    except ValueError:
        pass
    return {"file": str(path), "reason": rejection.reason}
