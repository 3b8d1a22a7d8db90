"""`jaffnet ingest --format decision-log`: the reviewed frames of a scripted decision log become a
dataset of the usual layout, each mask taken from its review; what cannot be used is counted."""

import json

import numpy as np
import pyarrow.dataset as pads
import pytest

from cli.main import main
from pipelines.data.dataset import iter_samples, read_manifest
from pipelines.data.ingestion import IngestError
from pipelines.data.reviewed_frames import ingest_decision_log
from pipelines.data.splits import SPLITS
from tests.pipelines.data.decision_logs import START, Logged, noisy_frame, write_log

BOX = {"x": 4, "y": 3, "width": 6, "height": 5}
CONFIRMED_MASK = np.zeros((24, 32), bool)
CONFIRMED_MASK[10:14, 20:30] = True


@pytest.fixture
def log(tmp_path):
    """req-0000..0009: what each review makes of its frame (L1 unless said)."""
    write_log(tmp_path / "log", [
        Logged("OK", "OK", sample_rate=0.25),  # 0: a good part: empty mask
        Logged("NG", "NG", regions=[BOX]),  # 1: the operator's box
        Logged("NG", "NG", model_mask=CONFIRMED_MASK),  # 2: the model's NG confirmed: its mask
        Logged("OK", "NG", source="escape"),  # 3: an escape: defective, but where? rejected
        Logged("NG", "OK"),  # 4: overkill corrected: empty mask
        Logged("OK"),  # 5: nobody reviewed it
        Logged("NG", "NG", regions=[BOX], line="L2"),  # 6: another line
        Logged("NG", "NG", regions=[{"x": 30, "y": 0, "width": 5, "height": 5}]),  # 7: box off the frame
        Logged("OK", "OK", keep_frame=False),  # 8: its frame was not kept
        Logged("NG", "NG", model_mask=np.zeros((24, 32), bool)),  # 9: confirmed, but the model's mask is empty
    ])
    return tmp_path / "log"


def rows_by_id(dataset) -> dict:
    return {sample.id: sample for split in SPLITS for sample in iter_samples(dataset, split)}


def test_reviews_become_rows_with_their_masks(log, tmp_path):
    result = ingest_decision_log(log, tmp_path / "ds", line="L1", val_fraction=0.2, test_fraction=0.2)
    rows = rows_by_id(tmp_path / "ds")
    assert sorted(rows) == ["req-0000", "req-0001", "req-0002", "req-0004"]
    assert {sample.defect_class for sample in rows.values()} == {"L1"}  # the line is the class
    assert np.array_equal(rows["req-0000"].image, noisy_frame(0))  # the kept frame, pixel for pixel
    assert not rows["req-0000"].mask.any() and not rows["req-0004"].mask.any()
    boxed = np.zeros((24, 32), np.uint8)
    boxed[3:8, 4:10] = 255
    assert np.array_equal(rows["req-0001"].mask, boxed)
    assert np.array_equal(rows["req-0002"].mask > 0, CONFIRMED_MASK)

    manifest = result.manifest
    assert manifest == read_manifest(tmp_path / "ds")
    assert manifest["source_format"] == "decision-log" and manifest["num_samples"] == 4
    assert manifest["num_defect_free"] == 2 and sum(manifest["totals"].values()) == 4
    assert manifest["arguments"]["line"] == "L1" and manifest["arguments"]["src"] == str(log)
    reasons = {item["file"]: item["reason"] for item in manifest["rejected"]}
    assert sorted(reasons) == ["request req-0003", "request req-0007", "request req-0008", "request req-0009"]
    assert "no pixel mask" in reasons["request req-0003"] and "escape" in reasons["request req-0003"]
    assert "does not fit" in reasons["request req-0007"]
    assert "not kept" in reasons["request req-0008"]
    assert "mask is empty" in reasons["request req-0009"]
    assert manifest["num_rejected"] == 4 and manifest["num_unreviewed"] == 1  # req-0005
    assert manifest["provenance"]["mask_sources"] == {"ok": 2, "boxes": 1, "model": 1}
    assert manifest["provenance"]["model_versions"] == {"jaffnet/3": 4}


def test_every_row_says_where_its_label_came_from(log, tmp_path):
    ingest_decision_log(log, tmp_path / "ds", line="L1")
    table = pads.dataset(tmp_path / "ds" / "data", format="parquet").to_table()
    rows = {row["id"]: row for row in table.drop_columns(["image", "mask"]).to_pylist()}
    first = rows["req-0000"]
    assert (first["verdict"], first["mask_source"], first["review_source"]) == ("OK", "ok", "review")
    assert (first["model_name"], first["model_version"], first["sample_rate"]) == ("jaffnet", "3", 0.25)
    assert first["reviewer_key_id"] == "key-0" and first["reviewed_at"] > first["decided_at"]
    assert rows["req-0002"]["mask_source"] == "model" and rows["req-0001"]["mask_source"] == "boxes"
    assert rows["req-0001"]["has_defect"] and not rows["req-0004"]["has_defect"]


def test_the_selection_by_line_and_time(log, tmp_path):
    everything = ingest_decision_log(log, tmp_path / "all").manifest
    assert everything["counts"]["train"].keys() | everything["counts"]["val"].keys() <= {"L1", "L2"}
    assert everything["num_samples"] == 5  # L2's req-0006 too
    # decided in [START + 1, START + 4): req-0001, 0002 and 0003 (rejected)
    window = ingest_decision_log(log, tmp_path / "window", since=START + 1, until=START + 4).manifest
    assert window["num_samples"] == 2 and window["num_rejected"] == 1 and window["num_unreviewed"] == 0


def test_nothing_usable_or_strict_writes_nothing(log, tmp_path):
    with pytest.raises(IngestError, match="no valid samples") as refused:
        ingest_decision_log(log, tmp_path / "ds", since=START + 3, until=START + 4)  # only the escape
    assert [item["file"] for item in refused.value.rejected] == ["request req-0003"]
    with pytest.raises(IngestError, match="--strict: 4 reviewed decisions rejected"):
        ingest_decision_log(log, tmp_path / "ds", line="L1", strict=True)
    assert not (tmp_path / "ds").exists()


def test_the_command(log, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["ingest", "--format", "decision-log", str(log), "--out", str(out), "--line", "L1",
                 "--since", "1970-01-01T00:00:00Z"]) == 0
    printed = capsys.readouterr().out
    assert "ingested 4 samples (decision-log)" in printed and "rejected 4 reviewed decisions:" in printed
    assert "request req-0003: an NG verdict (escape)" in printed
    assert "1 decisions in the selection were not reviewed" in printed
    assert json.loads((out / "manifest.json").read_text())["arguments"]["since"] == "1970-01-01T00:00:00.000Z"
    assert main(["ingest", "--format", "folder", str(log), "--out", str(tmp_path / "x"), "--line", "L1"]) == 2
    assert "only with --format decision-log" in capsys.readouterr().err
    assert main(["ingest", "--format", "decision-log", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
    assert "no decision log" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage_error:
        main(["ingest", "--format", "decision-log", str(log), "--out", str(tmp_path / "z"), "--since", "yesterday"])
    assert usage_error.value.code == 2 and "not an ISO 8601 time" in capsys.readouterr().err
