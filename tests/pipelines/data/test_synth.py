import csv

import cv2
import numpy as np
import pytest

from pipelines.data.defects import DEFECT_KINDS
from pipelines.data.synth import CLASSES, draw_sample, synthesize
from pipelines.data.textures import TEXTURES, render_texture


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_mask_is_exactly_where_the_defect_was_drawn(kind):
    for seed in range(8):
        sample = draw_sample(64, np.random.default_rng(seed), kind)
        changed = sample.image != sample.background
        inside = sample.mask > 0
        assert set(np.unique(sample.mask)) == {0, 255}
        assert not (changed & ~inside).any(), "pixels outside the mask were altered"
        assert changed[inside].mean() > 0.3, "the defect is invisible inside its mask"


def test_easy_difficulty_plants_the_same_defects_with_more_contrast():
    for seed in range(20):
        hard = draw_sample(64, np.random.default_rng(seed), "patch", difficulty="hard")
        easy = draw_sample(64, np.random.default_rng(seed), "patch", difficulty="easy")
        assert np.array_equal(hard.mask, easy.mask) and np.array_equal(hard.background, easy.background)
        inside = hard.mask > 0
        change = lambda s: np.abs(s.image.astype(int) - s.background)[inside].mean()  # noqa: E731
        assert change(easy) >= change(hard)


def test_hard_difficulty_keeps_some_defects_faint():
    def planted_contrast(difficulty, seed):
        sample = draw_sample(64, np.random.default_rng(seed), "inclusion", difficulty=difficulty)
        return np.abs(sample.image.astype(int) - sample.background)[sample.mask > 0].max()

    hard = [planted_contrast("hard", s) for s in range(60)]
    easy = [planted_contrast("easy", s) for s in range(60)]
    assert min(hard) < 15 < min(easy)


def test_unknown_difficulty_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown difficulty 'medium'"):
        synthesize(tmp_path / "out", count=2, size=32, difficulty="medium")


def test_defect_free_frames_have_empty_masks():
    sample = draw_sample(64, np.random.default_rng(0), "none")
    assert not sample.mask.any() and np.array_equal(sample.image, sample.background)


def test_defect_sizes_span_a_few_pixels_to_a_third_of_the_frame():
    areas = [np.count_nonzero(draw_sample(128, np.random.default_rng(s), k).mask) / 128**2
             for k in DEFECT_KINDS for s in range(15)]
    assert min(areas) < 0.002 and max(areas) > 0.08


@pytest.mark.parametrize("texture", TEXTURES)
def test_textures_vary_and_fill_the_frame(texture):
    a = render_texture(texture, 48, np.random.default_rng(0))
    b = render_texture(texture, 48, np.random.default_rng(1))
    assert a.shape == (48, 48) and a.std() > 1.0 and not np.allclose(a, b)


def test_synthesize_writes_the_folder_layout_deterministically(tmp_path):
    first = synthesize(tmp_path / "a", count=30, size=32, seed=3)
    synthesize(tmp_path / "b", count=30, size=32, seed=3)
    with open(tmp_path / "a" / "classes.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30 and {r["defect_class"] for r in rows} <= set(CLASSES)
    assert sum(first.classes.values()) == 30 and "none" in first.classes
    for row in rows:
        image = cv2.imread(str(tmp_path / "a" / "images" / f"{row['id']}.png"), cv2.IMREAD_UNCHANGED)
        again = cv2.imread(str(tmp_path / "b" / "images" / f"{row['id']}.png"), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(tmp_path / "a" / "masks" / f"{row['id']}.png"), cv2.IMREAD_UNCHANGED)
        assert image.shape == mask.shape == (32, 32) and np.array_equal(image, again)
        assert mask.any() == (row["defect_class"] != "none")


def test_synthesize_refuses_to_overwrite_and_checks_arguments(tmp_path):
    synthesize(tmp_path, count=2, size=32, seed=0)
    with pytest.raises(FileExistsError, match="--overwrite"):
        synthesize(tmp_path, count=2, size=32, seed=0)
    synthesize(tmp_path, count=3, size=32, seed=0, overwrite=True)
    assert len(list((tmp_path / "images").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}")) == []


def test_overwrite_never_deletes_a_folder_synth_did_not_write(tmp_path):
    home = tmp_path / "home"
    (home / "thesis").mkdir(parents=True)
    (home / "thesis" / "chapter1.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="not written by `jaffnet synth`"):
        synthesize(home, count=2, size=32, seed=0, overwrite=True)
    assert (home / "thesis" / "chapter1.tex").read_text() == "years of work"
    with pytest.raises(ValueError, match="count"):
        synthesize(tmp_path / "x", count=0, size=32, seed=0)


def test_textures_can_be_held_out(tmp_path):
    seen = synthesize(tmp_path / "seen", count=40, size=32, seed=1, textures=["brick", "noise"])
    assert set(seen.textures) == {"brick", "noise"}
    unseen = synthesize(tmp_path / "unseen", count=40, size=32, seed=1, textures=("fabric",))
    assert set(unseen.textures) == {"fabric"}
    everything = synthesize(tmp_path / "all", count=40, size=32, seed=1, textures=list(TEXTURES))
    default = synthesize(tmp_path / "default", count=40, size=32, seed=1)
    assert everything.textures == default.textures  # listing them all draws the same frames as the default
    for bad in (["marble"], []):
        with pytest.raises(ValueError, match="textures must be a non-empty subset"):
            synthesize(tmp_path / "bad", count=2, size=32, textures=bad)
