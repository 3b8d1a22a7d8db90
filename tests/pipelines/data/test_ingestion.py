import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import pipelines.data.ingestion as ingestion
from pipelines.data.ingestion import IngestError, ingest
from pipelines.data.dataset import read_manifest

COLUMNS = {"id", "source_format", "defect_class", "split", "height", "width", "image", "mask",
           "has_defect"}


def rejected(manifest: dict) -> dict[str, str]:
    return {Path(r["file"]).name: r["reason"] for r in manifest["rejected"]}


def rows(dataset: Path) -> list[dict]:
    return pq.read_table(dataset / "data").to_pylist()


def test_folder_ingest_rejects_each_bad_file_with_its_reason(ray_session, folder_source, tmp_path):
    result = ingest(folder_source, tmp_path / "ds", "folder", seed=0)
    manifest = read_manifest(tmp_path / "ds")
    assert manifest == result.manifest
    assert manifest["num_samples"] == 8 and manifest["num_rejected"] == 5
    reasons = rejected(manifest)
    assert reasons["no_mask.png"] == "missing mask"
    assert reasons["orphan.png"] == "mask without an image"
    assert "not a decodable image" in reasons["truncated.png"]
    assert "not binary" in reasons["grey_mask.png"]
    assert "differs from image size" in reasons["wrong_size.png"]
    blamed = {r["file"] for r in manifest["rejected"]}  # relative to the source, the right file
    assert {"images/truncated.png", "masks/grey_mask.png", "masks/wrong_size.png"} <= blamed
    table = rows(tmp_path / "ds")
    assert set(table[0]) == COLUMNS
    by_id = {r["id"]: r for r in table}
    assert by_id["good1"]["defect_class"] == "defect" and by_id["good1"]["has_defect"]
    assert by_id["good0"]["defect_class"] == "none" and not by_id["good0"]["has_defect"]
    assert by_id["good3"]["height"] == 32 and by_id["good3"]["source_format"] == "folder"
    assert sum(manifest["totals"].values()) == 8
    assert manifest["arguments"]["seed"] == 0 and manifest["arguments"]["format"] == "folder"


def test_sd900_counts_per_split_and_class(ray_session, sd900_source, tmp_path):
    manifest = ingest(sd900_source, tmp_path / "ds", "sd900", val_fraction=0.25,
                      test_fraction=0.25).manifest
    for name in ("inclusion", "patches", "scratches"):
        assert [manifest["counts"][s][name] for s in ("train", "val", "test")] == [2, 1, 1]
    assert set(rejected(manifest)) == {"Sc_9.bmp", "Xx_1.bmp", "In_7.bmp"}
    table = rows(tmp_path / "ds")
    assert all(r["height"] == r["width"] == 40 for r in table)
    split_of = {r["id"]: (r["split"], r["defect_class"]) for r in table}
    for split in ("train", "val", "test"):  # the manifest agrees with the Parquet rows
        for name, count in manifest["counts"][split].items():
            assert sum(v == (split, name) for v in split_of.values()) == count


def test_mtile_keeps_original_sizes(ray_session, mtile_source, tmp_path):
    manifest = ingest(mtile_source, tmp_path / "ds", "mtile").manifest
    assert manifest["num_samples"] == 9 and manifest["num_defect_free"] == 3
    sizes = {(r["height"], r["width"]) for r in rows(tmp_path / "ds")}
    assert len(sizes) > 3
    assert set(rejected(manifest)) == {"exp9_num_9.jpg", "Imgs", "MT_Rust"}


def test_dagm_keeps_its_official_test_split(ray_session, dagm_source, tmp_path):
    manifest = ingest(dagm_source, tmp_path / "ds", "dagm", val_fraction=0.34).manifest
    table = rows(tmp_path / "ds")
    assert {r["id"] for r in table if r["split"] == "test"} == {
        f"class{k}_test_{n:04d}" for k in (1, 2) for n in (1, 2, 3)}
    assert manifest["totals"] == {"train": 8, "val": 4, "test": 6}
    assert not next(r for r in table if r["id"] == "class1_train_0001")["has_defect"]
    assert next(r for r in table if r["id"] == "class1_train_0002")["has_defect"]
    assert set(rejected(manifest)) == {"0010.PNG", "Class1_def"}


def test_strict_turns_rejections_into_an_error_and_writes_nothing(ray_session, folder_source, tmp_path):
    with pytest.raises(IngestError, match="5 files rejected") as info:
        ingest(folder_source, tmp_path / "ds", "folder", strict=True)
    assert len(info.value.rejected) == 5
    assert list(tmp_path.iterdir()) == [folder_source]


def test_never_overwrites_without_permission_and_swaps_atomically(ray_session, sd900_source, tmp_path):
    out = tmp_path / "ds"
    first = ingest(sd900_source, out, "sd900", seed=0).manifest
    with pytest.raises(IngestError, match="already exists"):
        ingest(sd900_source, out, "sd900", seed=1)
    assert read_manifest(out) == first
    second = ingest(sd900_source, out, "sd900", seed=1, overwrite=True).manifest
    assert read_manifest(out)["arguments"]["seed"] == 1 and second["content_hash"] != first["content_hash"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ds", sd900_source.name])
    with pytest.raises(IngestError, match="refusing to replace its own source"):
        ingest(sd900_source, sd900_source.parent, "sd900", overwrite=True)
    assert sd900_source.is_dir()
    other = tmp_path / "notes"
    (other / "sub").mkdir(parents=True)
    with pytest.raises(IngestError, match="was not written by `jaffnet ingest`"):  # never deletes other folders
        ingest(sd900_source, other, "sd900", overwrite=True)
    assert (other / "sub").is_dir()


def test_leftovers_of_interrupted_runs_are_removed(ray_session, sd900_source, tmp_path):
    stale = tmp_path / ".ds.tmp-999999999-deadbeef"  # no such process
    (stale / "data").mkdir(parents=True)
    ingest(sd900_source, tmp_path / "ds", "sd900")
    assert not stale.exists() and (tmp_path / "ds" / ".jaffnet-ingest").is_file()


def test_an_interrupted_ingest_leaves_nothing_behind(ray_session, sd900_source, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ingestion, "publish", crash)
    with pytest.raises(KeyboardInterrupt):
        ingest(sd900_source, tmp_path / "ds", "sd900")
    assert sorted(p.name for p in tmp_path.iterdir()) == [sd900_source.name]


def test_nothing_valid_is_an_error(ray_session, tmp_path):
    (tmp_path / "src" / "images").mkdir(parents=True)
    (tmp_path / "src" / "masks").mkdir()
    (tmp_path / "src" / "images" / "a.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "src" / "masks" / "a.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(IngestError, match="no valid samples"):
        ingest(tmp_path / "src", tmp_path / "ds", "folder")
    assert not (tmp_path / "ds").exists()


def test_manifest_is_plain_json(ray_session, sd900_source, tmp_path):
    ingest(sd900_source, tmp_path / "ds", "sd900")
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert {"counts", "totals", "rejected", "arguments", "content_hash"} <= set(manifest)


def test_decode_tasks_are_one_wave_of_the_instances_cpus_capped(monkeypatch, tmp_path):
    import ray

    from pipelines.data import ingestion

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    for cpus, num_cpus, tasks in ((2, 0.5, 4), (2, 1, 2), (2, 4, 1), (64, 0.5, ingestion.MAX_DECODE_TASKS)):
        monkeypatch.setattr(ray, "cluster_resources", lambda cpus=cpus: {"CPU": cpus})
        assert ingestion.decode_tasks(num_cpus) == tasks
    for bad in (0, -1, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError, match="num_cpus"):
            ingestion.ingest(tmp_path, tmp_path / "out", "folder", num_cpus=bad)
