"""`jaffnet ingest --format decision-log`: the frames operators reviewed on the line -> a dataset.

The endpoint's decision log (``decisions.sqlite``, read with ``pipelines.decision_records``)
keeps frames and what the model decided; operators' reviews say what was right. Each reviewed
decision whose frame was kept becomes a row of the same dataset layout ``jaffnet ingest`` writes
for the other formats (:mod:`pipelines.data.ingestion`), its mask taken from the review:

- verdict OK: an empty mask (a good part);
- verdict NG with boxes: the boxes the operator drew, filled;
- verdict NG without boxes on the model's NG decision (the operator confirmed it): the model's own
  stored mask.

An NG verdict with neither (an escape reported on an OK decision, or an operator's NG over the
model's OK without boxes) says the part is defective but not where: it cannot give a pixel mask
and is rejected with that reason, as are decisions whose frame was not kept and unreadable
frames. Decisions nobody reviewed are counted. Neither is fatal unless no row is left.

The line is the row's class (``defect_class``); ``id`` is the decision's request id, and extra
columns keep where each label came from: ``verdict``, ``mask_source`` (ok, boxes, model),
``decided_at``, ``reviewed_at`` (ISO 8601, UTC), ``review_source`` (review, escape),
``reviewer_key_id``, ``model_name``, ``model_version`` and ``sample_rate`` (the chance retention
kept the frame). The log is one SQLite file read by one connection, so rows are built in this
process and written with pyarrow, not Ray Data.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from pipelines.codec import InvalidSample, validate_pair
from pipelines.data.ingestion import (ROWS_PER_FILE, IngestResult, check_outcome, data_location, encoded_sample,
                                      prepare_output, publish_dataset, split_rows)
from pipelines.data.publish import discard, temporary_sibling
from pipelines.data.splits import check_fractions
from pipelines.decision_records import DecisionReader, StoredDecision, iso_time

SOURCE_FORMAT = "decision-log"
NO_LINE = "no-line"  # the class of frames posted without a line


class Unusable(ValueError):
    """A reviewed decision that cannot become a row; the message is the reason."""


def ingest_decision_log(log: str | Path, out: str | Path, *, line: str | None = None, since: float | None = None,
                        until: float | None = None, seed: int = 0, val_fraction: float = 0.15,
                        test_fraction: float = 0.15, overwrite: bool = False, strict: bool = False) -> IngestResult:
    """Write the dataset ``out`` from the reviewed frames of the decision log folder ``log``
    (decided in ``[since, until)`` on ``line``, when given); see the module docstring.
    ``IngestError`` as for the other formats; ``FileNotFoundError`` for a folder with no log."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    log = Path(log).resolve()
    check_fractions(val_fraction, test_fraction)
    reader = DecisionReader(log)
    if not reader.exists():
        raise FileNotFoundError(f"no decision log in {log} (expected {reader.path.name})")
    out = prepare_output(out, overwrite, sources=(log,))
    start = time.perf_counter()
    reviewed = reader.reviewed(line=line, since=since, until=until)
    unreviewed = reader.total(line=line, since=since, until=until) - len(reviewed)

    rows, rejected_rows = [], []
    for stored in reviewed:
        try:
            rows.append(_row(stored, reader.frame(stored.seq) if stored.has_frame else None))
        except Unusable as exc:
            rejected_rows.append({"file": f"request {stored.request_id}", "reason": str(exc)})
    check_outcome(rows, rejected_rows, strict, str(log), "reviewed decisions")
    split_rows(rows, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)

    tmp = temporary_sibling(out)
    try:
        filesystem, data_path = data_location(out, tmp)
        filesystem.create_dir(data_path, recursive=True)
        schema = _schema()
        for part, first in enumerate(range(0, len(rows), ROWS_PER_FILE)):
            chunk = rows[first:first + ROWS_PER_FILE]
            table = pa.table({name: [row[name] for row in chunk] for name in schema.names}, schema=schema)
            pq.write_table(table, f"{data_path}/part-{part:05d}.parquet", filesystem=filesystem)
        arguments = {"src": str(log), "out": str(out), "format": SOURCE_FORMAT, "seed": seed,
                     "val_fraction": val_fraction, "test_fraction": test_fraction, "line": line,
                     "since": None if since is None else iso_time(since),
                     "until": None if until is None else iso_time(until)}
        manifest = publish_dataset(
            tmp, out, SOURCE_FORMAT, arguments, rows, rejected_rows, start, num_unreviewed=unreviewed,
            provenance={"mask_sources": dict(Counter(row["mask_source"] for row in rows)),
                        "model_versions": dict(Counter(f"{row['model_name']}/{row['model_version']}" for row in rows)),
                        "reviewers": len({row["reviewer_key_id"] for row in rows})})
    finally:
        discard(tmp)
    return IngestResult(out, manifest)


def _row(stored: StoredDecision, frame: tuple[bytes, bytes] | None) -> dict:
    """One reviewed decision as a dataset row, or :class:`Unusable`."""
    review = stored.review
    if frame is None:
        raise Unusable("its frame was not kept (retention: frames ng, or dropped since)")
    frame_png, model_mask_png = frame
    try:
        if review.verdict == "OK":
            image, mask = validate_pair(frame_png, None)
            source = "ok"
        elif review.regions:
            image, _ = validate_pair(frame_png, None)
            mask, source = _boxes_mask(review.regions, image.shape[:2]), "boxes"
        elif stored.decision == "NG":
            image, mask = validate_pair(frame_png, model_mask_png)
            source = "model"
            if not mask.any():
                raise Unusable("the operator confirmed the model's NG without boxes, but its stored mask is empty")
        else:
            raise Unusable(f"an NG verdict ({review.source}) without boxes on the model's OK decision: "
                           "no pixel mask to learn from")
    except InvalidSample as exc:
        raise Unusable(f"stored frame unusable: {exc}") from None
    return {"id": stored.request_id, "source_format": SOURCE_FORMAT, "defect_class": stored.line or NO_LINE,
            **encoded_sample(image, mask), "verdict": review.verdict, "mask_source": source,
            "decided_at": iso_time(stored.ts), "reviewed_at": iso_time(review.ts), "review_source": review.source,
            "reviewer_key_id": review.reviewer_key_id, "model_name": stored.model["name"],
            "model_version": str(stored.model["version"]), "sample_rate": stored.sample_rate}


def _boxes_mask(regions: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """The operator's boxes (``x``, ``y``, ``width``, ``height`` in frame pixels) filled with 255."""
    height, width = shape
    mask = np.zeros(shape, np.uint8)
    for box in regions:
        try:
            x, y, w, h = (int(box[key]) for key in ("x", "y", "width", "height"))
        except (KeyError, TypeError, ValueError):
            raise Unusable(f"a malformed box {box!r}") from None
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise Unusable(f"box ({x},{y} {w}x{h}) does not fit in the {width}x{height} frame")
        mask[y:y + h, x:x + w] = 255
    return mask


def _schema():
    """The columns of every ingested dataset (as Ray Data writes them), then this format's provenance."""
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("source_format", pa.string()), ("defect_class", pa.string()),
                      ("split", pa.string()), ("height", pa.int32()), ("width", pa.int32()),
                      ("image", pa.binary()), ("mask", pa.binary()), ("has_defect", pa.bool_()),
                      ("verdict", pa.string()), ("mask_source", pa.string()), ("decided_at", pa.string()),
                      ("reviewed_at", pa.string()), ("review_source", pa.string()),
                      ("reviewer_key_id", pa.string()), ("model_name", pa.string()),
                      ("model_version", pa.string()), ("sample_rate", pa.float64())])
