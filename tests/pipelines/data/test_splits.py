from collections import Counter

import pytest

from pipelines.data.splits import assign_splits


def samples(per_class: dict[str, int], official=None):
    return [(f"{name}_{i}", name, official) for name, n in per_class.items() for i in range(n)]


def test_deterministic_for_a_seed_and_different_across_seeds():
    items = samples({"a": 40, "b": 30})
    first = assign_splits(items, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert first == assign_splits(list(reversed(items)), val_fraction=0.2, test_fraction=0.2, seed=1)
    assert first != assign_splits(items, val_fraction=0.2, test_fraction=0.2, seed=2)


def test_stratified_by_class():
    items = samples({"a": 50, "b": 100, "c": 20})
    splits = assign_splits(items, val_fraction=0.1, test_fraction=0.2, seed=0)
    per = Counter((item[1], splits[item[0]]) for item in items)
    assert per["a", "test"] == 10 and per["b", "test"] == 20 and per["c", "test"] == 4
    assert per["a", "val"] == 5 and per["b", "val"] == 10 and per["c", "val"] == 2


def test_tiny_datasets_still_fill_every_split_and_keep_each_class_in_train():
    items = samples({name: 4 for name in "abcdef"})
    splits = assign_splits(items, val_fraction=0.15, test_fraction=0.15, seed=0)
    assert set(Counter(splits.values())) == {"train", "val", "test"}
    for name in "abcdef":
        assert any(splits[f"{name}_{i}"] == "train" for i in range(4))


def test_official_split_is_respected():
    items = samples({"a": 10}, official="train") + [(f"t{i}", "a", "test") for i in range(5)]
    splits = assign_splits(items, val_fraction=0.2, test_fraction=0.3, seed=0)
    assert all(splits[f"t{i}"] == "test" for i in range(5))
    assert Counter(splits[f"a_{i}"] for i in range(10)) == {"train": 8, "val": 2}


@pytest.mark.parametrize("val, test", [(-0.1, 0.1), (0.6, 0.5), (1.0, 0.0)])
def test_bad_fractions(val, test):
    with pytest.raises(ValueError, match="fractions"):
        assign_splits([], val_fraction=val, test_fraction=test, seed=0)


def test_extra_test_samples_leave_the_train_and_val_counts_of_the_rest():
    from pipelines.data.splits import fractions_with_extra_test

    items = samples({"a": 300, "b": 340, "none": 1024 // 6 * 6})  # the demo's 640 + 1024 frames, rounded
    base = assign_splits(samples({"a": 300, "b": 340}), val_fraction=0.15, test_fraction=0.15, seed=0)
    val_fraction, test_fraction = fractions_with_extra_test(640, len(items) - 640)
    counts = Counter(assign_splits(items, val_fraction=val_fraction, test_fraction=test_fraction, seed=0).values())
    assert counts["train"] == Counter(base.values())["train"] == 448
    assert counts["val"] == 96 and counts["test"] == len(items) - 448 - 96
    with pytest.raises(ValueError, match="extra test samples"):
        fractions_with_extra_test(640, -1)
