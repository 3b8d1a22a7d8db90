"""Deterministic, class-stratified train/val/test splits that respect official splits."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

SPLITS = ("train", "val", "test")


def _stratified(items: list[tuple[str, str]], fractions: dict[str, float],
                rng: np.random.Generator) -> dict[str, str]:
    """Assign ``(id, class)`` items to splits with the given fractions, class by class.

    Rounding is cumulative across classes, so every class gets its share while the
    totals still match the fractions: 24 samples over six classes still yield a
    non-empty validation split instead of six rounded-down zeros. A class with two or
    more samples always keeps one for training.
    """
    by_class: dict[str, list[str]] = defaultdict(list)
    for sample_id, defect_class in items:
        by_class[defect_class].append(sample_id)
    assigned: dict[str, str] = {}
    seen = 0
    taken = dict.fromkeys(fractions, 0)
    for defect_class in sorted(by_class):
        ids = sorted(by_class[defect_class])
        ids = [ids[i] for i in rng.permutation(len(ids))]
        seen += len(ids)
        start, held_out = 0, len(ids) - 1 if len(ids) >= 2 else 0
        for split, fraction in fractions.items():
            quota = int(round(fraction * seen)) - taken[split]
            quota = max(0, min(quota, held_out - start))
            for sample_id in ids[start:start + quota]:
                assigned[sample_id] = split
            start += quota
            taken[split] += quota
        for sample_id in ids[start:]:
            assigned[sample_id] = "train"
    return assigned


def fractions_with_extra_test(count: int, extra_test: int, val_fraction: float = 0.15,
                              test_fraction: float = 0.15) -> tuple[float, float]:
    """The val and test fractions of ``count + extra_test`` samples that split ``count`` of
    them as ``val_fraction``/``test_fraction`` say and give the ``extra_test`` others to test:
    more test frames from the same source, the same frames to train and validate on."""
    if count < 1 or extra_test < 0:
        raise ValueError(f"count must be >= 1 and extra test samples >= 0, got {count} and {extra_test}")
    total = count + extra_test
    return val_fraction * count / total, (test_fraction * count + extra_test) / total


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"fractions must be in [0, 1) and sum below 1, got val={val_fraction}, "
                         f"test={test_fraction}")


def assign_splits(samples: Iterable[tuple[str, str, str | None]], *, val_fraction: float,
                  test_fraction: float, seed: int) -> dict[str, str]:
    """``(id, defect_class, official_split or None)`` -> ``{id: split}``.

    Samples with an official test (or val) split keep it; official training samples
    are divided into train/val; the rest are divided into train/val/test.
    """
    check_fractions(val_fraction, test_fraction)
    rng = np.random.default_rng(seed)
    free, official_train, assigned = [], [], {}
    for sample_id, defect_class, official in samples:
        if official is None:
            free.append((sample_id, defect_class))
        elif official == "train":
            official_train.append((sample_id, defect_class))
        elif official in SPLITS:
            assigned[sample_id] = official
        else:
            raise ValueError(f"unknown official split {official!r} for {sample_id}")
    assigned |= _stratified(free, {"test": test_fraction, "val": val_fraction}, rng)
    assigned |= _stratified(official_train, {"val": val_fraction}, rng)
    return assigned
