"""``jaffnet evaluate --out``: the operating table against a hand count, and the report files."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from scipy.stats import beta

from jaffnet.decision import DecisionRule
from jaffnet.metrics import image_auroc
from pipelines.evaluation.evaluate import FRAME_COLUMNS, Evaluation
from pipelines.evaluation.report import (
    FILES,
    format_operating_table,
    operating_table,
    roc_pr_curves,
    write_report,
)

RULE = DecisionRule(pixel_threshold=0.5, image_threshold=0.55)

# id, defect_class, label, image_score, largest_region_px (decision: the stored rule, NG at >= 0.55)
SCRIPT = [
    ("a", "crack", "OK", 0.10, 0),
    ("b", "crack", "OK", 0.60, 9),
    ("c", "good", "OK", 0.20, 0),
    ("d", "good", "OK", 0.30, 2),
    ("e", "crack", "NG", 0.50, 4),
    ("f", "crack", "NG", 0.70, 12),
    ("g", "crack", "NG", 0.90, 20),
    ("h", "scratch", "NG", 0.25, 1),
    ("i", "scratch", "NG", 0.80, 15),
]


def make_frames(script=SCRIPT, rule=RULE):
    return [{"id": i, "defect_class": c, "label": label, "image_score": s,
             "decision": "NG" if rule.is_ng(s, px) else "OK", "largest_region_px": px, "defect_area_px": 2 * px}
            for i, c, label, s, px in script]


def make_evaluation(frames, rule=RULE):
    return Evaluation(model="models:/jaffnet@candidate", split="test", count=len(frames), contract=None,
                      rule=rule.to_dict(), rows={}, image_rows={}, frames=frames)


def upper(errors, frames):
    """The one-sided 95 % Clopper-Pearson upper bound, by hand."""
    return 1.0 if errors == frames else beta.ppf(0.95, errors + 1, frames - errors)


def block(rows, basis):
    return {row["class"]: row for row in rows if row["basis"] == basis}


def check(row, escapes, defective, overkill, good):
    assert (row["escapes"], row["defective_frames"], row["overkill"], row["good_frames"]) == \
        (escapes, defective, overkill, good)
    for errors, frames, rate, bound in ((escapes, defective, row["escape_rate"], row["escape_upper95"]),
                                        (overkill, good, row["overkill_rate"], row["overkill_upper95"])):
        if frames:
            assert rate == pytest.approx(errors / frames)
            assert bound == pytest.approx(upper(errors, frames), rel=1e-9)
        else:
            assert rate is None and bound is None


def test_operating_table_matches_a_hand_count_per_class_and_overall():
    rows = operating_table(make_frames(), targets=(0.0, 0.2), rule=RULE)
    assert [row["class"] for row in rows[:4]] == ["crack", "good", "scratch", "overall"]
    assert len(rows) == 3 * 4  # two targets and the stored rule, four rows each

    # escape 0: the cut must pass under h (0.25) and over c (0.20): midway, 0.225; d and b are overkill
    zero = block(rows, "escape <= 0%")
    assert [row["cut"] for row in zero.values()] == pytest.approx([0.225] * 4)
    check(zero["crack"], 0, 3, 1, 2)
    check(zero["good"], 0, 0, 1, 2)
    check(zero["scratch"], 0, 2, 0, 0)
    check(zero["overall"], 0, 5, 2, 4)

    # escape <= 20 % (one of five): h may escape, the cut rises to midway between d (0.30) and e (0.50)
    one = block(rows, "escape <= 20%")
    assert one["overall"]["cut"] == pytest.approx(0.4) and one["overall"]["target"] == 0.2
    check(one["crack"], 0, 3, 1, 2)
    check(one["good"], 0, 0, 0, 2)
    check(one["scratch"], 1, 2, 0, 0)
    check(one["overall"], 1, 5, 1, 4)

    # the stored rule counts the frames' own decisions (NG at >= 0.55): e and h escape, b is overkill
    stored = block(rows, "stored rule")
    assert stored["overall"]["target"] is None and stored["overall"]["cut"] == 0.55
    check(stored["crack"], 1, 3, 1, 2)
    check(stored["good"], 0, 0, 0, 2)
    check(stored["scratch"], 1, 2, 0, 0)
    check(stored["overall"], 2, 5, 1, 4)
    assert all(row["note"] is None for row in rows)


def test_the_default_targets_on_five_defective_frames_all_need_zero_escapes():
    rows = operating_table(make_frames())
    assert [row["basis"] for row in rows if row["class"] == "overall"] == \
        ["escape <= 0%", "escape <= 1%", "escape <= 5%", "stored rule"]
    assert [row["cut"] for row in rows if row["target"] is not None] == pytest.approx([0.225] * 12)
    assert block(rows, "stored rule")["overall"]["cut"] is None  # no rule given: only the decisions


def test_the_area_rule_keeps_small_regions_ok_at_every_cut():
    # NG needs a region >= 3 px: a, c, d (good) and h (defective, 1 px) stay OK whatever the cut
    rows = operating_table(make_frames(), targets=(0.0, 0.2), min_defect_area_px=3)
    zero = block(rows, "escape <= 0%")
    assert zero["overall"]["cut"] is None and zero["overall"]["escapes"] is None
    assert "min_defect_area_px" in zero["overall"]["note"]
    assert zero["overall"]["defective_frames"] == 5 and zero["overall"]["good_frames"] == 4
    one = block(rows, "escape <= 20%")
    # every cut under e (0.50) rejects e, f, g, i and, of the good frames, only b: the middle one is taken
    assert one["overall"]["cut"] == pytest.approx(0.225)
    check(one["crack"], 0, 3, 1, 2)
    check(one["good"], 0, 0, 0, 2)  # d (0.30) is over the cut but its region is 2 px
    check(one["scratch"], 1, 2, 0, 0)
    check(one["overall"], 1, 5, 1, 4)
    text = format_operating_table(rows)
    assert "no cut meets escape <= 0%" in text


def test_the_console_table_shows_counts_bounds_and_the_optimism_caveat():
    text = format_operating_table(operating_table(make_frames(), targets=(0.0, 0.2), rule=RULE))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("rule"))
    assert header.split() == ["rule", "cut", "class", "escapes", "rate", "upper95", "overkill", "rate", "upper95"]
    overall = [line.split() for line in lines if " overall " in f" {line} "]
    assert overall[1][-6:] == ["1/5", "20.00%", f"{upper(1, 5):.2%}", "1/4", "25.00%", f"{upper(1, 4):.2%}"]
    assert any(line.startswith("stored rule") and "0.5500" in line for line in lines)
    assert "optimistic for this split" in text
    widths = {len(line) for line in lines[lines.index(header):] if line.startswith(("rule", "escape", "stored"))}
    assert len(widths) == 1  # fixed width


def test_curves_match_the_auroc_and_scikit_learn():
    frames = make_frames()
    scores = [f["image_score"] for f in frames]
    defective = [f["label"] == "NG" for f in frames]
    curve = roc_pr_curves(scores, defective)
    assert curve["auc"] == pytest.approx(image_auroc(np.array(scores), np.array(defective)))
    metrics = pytest.importorskip("sklearn.metrics")
    fpr, tpr, _ = metrics.roc_curve(defective, scores, drop_intermediate=False)
    assert np.allclose(curve["fpr"], fpr) and np.allclose(curve["tpr"], tpr)
    assert curve["average_precision"] == pytest.approx(metrics.average_precision_score(defective, scores))
    assert roc_pr_curves(scores, [True] * len(scores)) is None


def assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100


def test_write_report_writes_the_csv_curves_histogram_and_tables(tmp_path):
    frames = make_frames()
    out = tmp_path / "report" / "nested"  # created if missing
    written = write_report(make_evaluation(frames), out)
    assert sorted(path.name for path in written) == sorted(FILES)
    assert all(path.parent == out and path.is_file() for path in written)

    with (out / "frames.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == FRAME_COLUMNS
        read = list(reader)
    assert [row["id"] for row in read] == [f["id"] for f in frames]
    for row, frame in zip(read, frames):
        assert (row["defect_class"], row["label"], row["decision"]) == \
            (frame["defect_class"], frame["label"], frame["decision"])
        assert float(row["image_score"]) == frame["image_score"]
        assert int(row["largest_region_px"]) == frame["largest_region_px"]
        assert int(row["defect_area_px"]) == frame["defect_area_px"]

    for name in ("roc.png", "pr.png", "score_histogram.png"):
        assert_png(out / name)

    document = json.loads((out / "operating_table.json").read_text())
    assert document["rows"] == json.loads(json.dumps(operating_table(frames, rule=RULE)))
    assert document["split"] == "test" and document["notes"] == []
    text = (out / "operating_table.txt").read_text()
    assert "models:/jaffnet@candidate on test (9 frames)" in text and "escape <= 5%" in text
    assert "optimistic" in text

    # again into the same folder: overwritten, not refused
    assert sorted(path.name for path in write_report(make_evaluation(frames), out)) == sorted(FILES)


@pytest.mark.parametrize("labels, missing", [("NG", "no good frames"), ("OK", "no defective frames")])
def test_a_split_of_one_kind_writes_the_csv_and_histogram_without_curves(tmp_path, labels, missing):
    frames = [{**frame, "label": labels} for frame in make_frames()]
    written = write_report(make_evaluation(frames), tmp_path)
    assert sorted(path.name for path in written) == \
        ["frames.csv", "operating_table.json", "operating_table.txt", "score_histogram.png"]
    assert not (tmp_path / "roc.png").exists() and not (tmp_path / "pr.png").exists()
    assert_png(tmp_path / "score_histogram.png")
    assert f"ROC and PR curves not written: the split has {missing}" in (tmp_path / "operating_table.txt").read_text()
    document = json.loads((tmp_path / "operating_table.json").read_text())
    assert any(missing in note for note in document["notes"])
    assert all(row["cut"] is None for row in document["rows"] if row["target"] is not None)


def test_a_split_without_frames_still_writes_a_header_and_a_histogram(tmp_path):
    written = write_report(make_evaluation([]), tmp_path)
    assert (tmp_path / "frames.csv").read_text().strip() == ",".join(FRAME_COLUMNS)
    assert "score_histogram.png" in {path.name for path in written}


def test_an_out_path_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "report"
    target.write_text("not a folder")
    with pytest.raises(ValueError, match="not a directory"):
        write_report(make_evaluation(make_frames()), target)


def test_evaluate_out_writes_the_report_and_prints_the_table(monkeypatch, tmp_path, capsys):
    import pipelines.registry
    import pipelines.evaluation.evaluate
    from cli.main import main

    calls = []
    monkeypatch.setattr(pipelines.registry, "configure_tracking", lambda uri: None)
    monkeypatch.setattr(pipelines.evaluation.evaluate, "evaluate",
                        lambda *args, **kwargs: calls.append(args) or make_evaluation(make_frames()))
    out = tmp_path / "report"
    assert main(["evaluate", "--model", "models:/jaffnet@candidate", "--data", str(tmp_path),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Operating table: models:/jaffnet@candidate on test" in printed and "optimistic" in printed
    assert all(f"wrote {out / name}" in printed for name in FILES)
    assert sorted(path.name for path in out.iterdir()) == sorted(FILES)

    calls.clear()
    (tmp_path / "file").write_text("")
    assert main(["evaluate", "--model", "m", "--data", str(tmp_path), "--out", str(tmp_path / "file")]) == 2
    assert "not a directory" in capsys.readouterr().err and calls == []  # refused before evaluating
