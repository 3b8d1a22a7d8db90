from pathlib import Path

import pytest

from pipelines.data.layouts import SourceError, discover


def reasons(found) -> dict[str, str]:
    return {Path(r.file).name: r.reason for r in found.rejected}


def test_folder_pairs_by_stem_across_extensions(folder_source):
    found = discover("folder", folder_source)
    ids = sorted(r.id for r in found.records)
    # truncated/grey/wrong-size pairs are found here and rejected later, when decoded
    assert ids == sorted([f"good{i}" for i in range(8)] + ["grey_mask", "truncated", "wrong_size"])
    assert reasons(found) == {"no_mask.png": "missing mask", "orphan.png": "mask without an image"}
    assert all(r.defect_class is None for r in found.records)  # no classes.csv: from the mask


def test_folder_reads_classes_csv(folder_source):
    (folder_source / "classes.csv").write_text("id,defect_class\ngood1,Scratch\n")
    classes = {r.id: r.defect_class for r in discover("folder", folder_source).records}
    assert classes["good1"] == "scratch" and classes["good2"] is None


def test_sd900_classes_from_prefix(sd900_source):
    found = discover("sd900", sd900_source)
    classes = {r.id: r.defect_class for r in found.records}
    assert classes["In_1"] == "inclusion" and classes["Pa_2"] == "patches" and classes["Sc_4"] == "scratches"
    assert len(classes) == 13  # 12 good + the truncated In_7
    found_reasons = reasons(found)
    assert found_reasons["Sc_9.bmp"] == "missing mask"
    assert "unknown class prefix" in found_reasons["Xx_1.bmp"]


def test_mtile_masks_beside_images(mtile_source):
    found = discover("mtile", mtile_source)
    classes = {r.id: r.defect_class for r in found.records}
    assert sorted(set(classes.values())) == ["blowhole", "crack", "free"]
    assert "crack_exp0_num_100" in classes and len(classes) == 9
    found_reasons = reasons(found)
    assert found_reasons["exp9_num_9.jpg"] == "missing mask"
    assert found_reasons["Imgs"] == "empty folder"  # MT_Fray/Imgs
    assert "unknown folder" in found_reasons["MT_Rust"]
    assert "README.md" not in found_reasons


def test_dagm_official_split_label_files_and_prefixed_ids(dagm_source):
    found = discover("dagm", dagm_source)
    records = {r.id: r for r in found.records}
    assert len(records) == 18  # ids repeat across classes and Train/Test: all kept
    assert records["class1_train_0002"].mask_path.endswith("0002_label.PNG")
    assert records["class1_train_0001"].mask_path is None  # no label file: defect-free
    assert records["class2_test_0003"].official_split == "test"
    assert {r.defect_class for r in records.values()} == {"class1", "class2"}
    found_reasons = reasons(found)
    assert "Labels.txt marks it defective" in found_reasons["0010.PNG"]
    assert "unknown folder" in found_reasons["Class1_def"]


@pytest.mark.parametrize("source_format", ["folder", "sd900", "mtile", "dagm"])
def test_empty_or_wrong_source_is_a_clear_error(tmp_path, source_format):
    with pytest.raises(SourceError, match="does not exist"):
        discover(source_format, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="is empty"):
        discover(source_format, tmp_path / "empty")
    (tmp_path / "other" / "something").mkdir(parents=True)
    with pytest.raises(SourceError):
        discover(source_format, tmp_path / "other")


def test_unknown_format(tmp_path):
    with pytest.raises(SourceError, match="unknown format"):
        discover("coco", tmp_path)
