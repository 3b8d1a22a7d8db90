"""`jaffnet synth`: a defect dataset generated on the spot, no download needed.

Writes the plain folder layout that ``jaffnet ingest --format folder`` reads:
``images/<id>.png``, ``masks/<id>.png`` (0/255) and ``classes.csv`` (``id,defect_class``).
Every frame is a function of ``(seed, index)`` only, so a seed reproduces the dataset
and any subset of it.
"""

from __future__ import annotations

import csv
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pipelines.data.publish import check_replaceable, clean_leftovers, publish, temporary_sibling
from pipelines.data.defects import DEFECT_FREE, DEFECT_KINDS, draw_defect, get_difficulty, plant
from pipelines.data.textures import TEXTURES, load_photos, render_texture

CLASSES = DEFECT_KINDS + (DEFECT_FREE,)
DEFECT_FREE_FRACTION = 0.15


@dataclass
class SynthSample:
    image: np.ndarray  # uint8 (size, size) grayscale
    mask: np.ndarray  # uint8 (size, size) in {0, 255}
    defect_class: str
    texture: str
    background: np.ndarray  # uint8 frame before the defect was planted


@dataclass
class SynthSummary:
    out_dir: str
    count: int
    size: int
    seed: int
    difficulty: str
    seconds: float
    classes: dict[str, int] = field(default_factory=dict)
    textures: dict[str, int] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        return asdict(self) | {"images_per_s": round(self.images_per_s, 1)}


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def check_textures(textures: tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """The textures to draw from (None: all of them), each a bundled one, in the bundled order."""
    if textures is None:
        return TEXTURES
    unknown = sorted(set(textures) - set(TEXTURES))
    if unknown or not textures:
        raise ValueError(f"textures must be a non-empty subset of {', '.join(TEXTURES)}; got "
                         f"{', '.join(unknown) or 'none'}")
    return tuple(name for name in TEXTURES if name in set(textures))


def draw_sample(size: int, rng: np.random.Generator, defect_class: str | None = None,
                difficulty: str = "hard", textures: tuple[str, ...] = TEXTURES) -> SynthSample:
    """One frame: a random texture of ``textures`` with (usually) one planted defect (see
    ``defects.DIFFICULTIES``)."""
    if defect_class is None:
        defect_free = rng.random() < DEFECT_FREE_FRACTION
        defect_class = DEFECT_FREE if defect_free else DEFECT_KINDS[rng.integers(len(DEFECT_KINDS))]
    texture = textures[rng.integers(len(textures))]
    background = _to_uint8(render_texture(texture, size, rng))
    if defect_class == DEFECT_FREE:
        return SynthSample(background, np.zeros_like(background), defect_class, texture, background)
    defect = draw_defect(defect_class, size, rng, difficulty)
    image = _to_uint8(plant(background.astype(np.float32), defect))
    return SynthSample(image, defect.mask * np.uint8(255), defect_class, texture, background)


def sample_id(index: int) -> str:
    return f"synth_{index:06d}"


SYNTH_TOOL = "synth"


def synthesize(out_dir: str | Path, count: int, size: int = 256, seed: int = 0,
               *, difficulty: str = "hard", textures: tuple[str, ...] | list[str] | None = None,
               overwrite: bool = False) -> SynthSummary:
    """Write ``count`` frames of ``size`` x ``size`` pixels into ``out_dir``.

    ``difficulty``: ``hard`` (default, a quarter of the defects faint) or ``easy``.
    ``textures``: draw backgrounds from these bundled textures only (None: all), e.g. to
    train on some surfaces and test on others the model never saw.
    """
    get_difficulty(difficulty)  # an unknown name fails before anything is written
    textures = check_textures(textures)
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    final = Path(out_dir)
    check_replaceable(final, SYNTH_TOOL, overwrite)  # only ever replaces a folder `jaffnet synth` wrote
    clean_leftovers(final)
    out = temporary_sibling(final)
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir(parents=True)
    try:
        summary = _write_samples(out, count, size, seed, difficulty, textures)
        publish(out, final, SYNTH_TOOL)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    summary.out_dir = str(final)
    return summary


def _write_samples(out: Path, count: int, size: int, seed: int, difficulty: str,
                   textures: tuple[str, ...]) -> SynthSummary:

    load_photos()  # once, outside the timing: the rate reported is the steady state
    start = time.perf_counter()
    summary = SynthSummary(str(out), count, size, seed, difficulty, 0.0)
    rows = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        sample = draw_sample(size, rng, difficulty=difficulty, textures=textures)
        name = sample_id(index)
        cv2.imwrite(str(out / "images" / f"{name}.png"), sample.image)
        cv2.imwrite(str(out / "masks" / f"{name}.png"), sample.mask)
        rows.append((name, sample.defect_class))
        summary.classes[sample.defect_class] = summary.classes.get(sample.defect_class, 0) + 1
        summary.textures[sample.texture] = summary.textures.get(sample.texture, 0) + 1
    with open(out / "classes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("id", "defect_class"))
        writer.writerows(rows)
    summary.seconds = time.perf_counter() - start
    return summary
