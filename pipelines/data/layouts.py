"""Finding image/mask pairs in the original download layouts, as they are.

Each reader walks one layout and returns the pairs it found plus every file it had to
reject (with the reason); decoding happens later, in parallel, in :mod:`pipelines.data.ingestion`.

Canonical (lower-case) class names per format:

- ``folder``: from an optional ``classes.csv`` (``id,defect_class``), else ``defect``/``none``
  from the mask; ``jaffnet synth`` writes scratch, inclusion, patch, crack, blowhole, none.
- ``sd900``: inclusion (In), patches (Pa), scratches (Sc).
- ``mtile``: blowhole, break, crack, fray, uneven, free.
- ``dagm``: class1 ... class10 (defect-free frames keep their class, ``has_defect`` is false).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
FORMATS = ("folder", "sd900", "mtile", "dagm")

SD900_CLASSES = {"in": "inclusion", "pa": "patches", "sc": "scratches"}
MTILE_CLASSES = ("blowhole", "break", "crack", "fray", "uneven", "free")


class SourceError(ValueError):
    """The source folder as a whole is missing, empty or not in the expected layout."""


@dataclass
class SourceRecord:
    id: str
    defect_class: str | None  # None: decided from the mask (defect / none)
    image_path: str
    mask_path: str | None  # None: a defect-free frame with no mask file
    official_split: str | None = None


@dataclass
class Rejection:
    file: str
    reason: str


@dataclass
class Discovery:
    records: list[SourceRecord] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    def reject(self, path: Path, reason: str) -> None:
        self.rejected.append(Rejection(str(path), reason))


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _by_stem(folder: Path, found: Discovery, *, skip=lambda path: False) -> dict[str, Path]:
    """Image files of a folder keyed by stem; other files and duplicate stems are rejected."""
    files: dict[str, Path] = {}
    for path in _visible(folder):
        if skip(path):
            continue
        if path.is_dir():
            found.reject(path, "unexpected folder")
        elif not _is_image(path):
            found.reject(path, f"not an image file (extension {path.suffix or 'none'!r})")
        elif path.stem in files:
            found.reject(path, f"duplicate stem: {files[path.stem].name} has the same name")
        else:
            files[path.stem] = path
    return files


def _require_folder(path: Path, description: str) -> Path:
    if not path.is_dir():
        raise SourceError(f"{path} not found: expected {description}")
    return path


def _pair(found: Discovery, images: dict[str, Path], masks: dict[str, Path], *,
          id_prefix: str = "", defect_class=lambda stem: None, mask_optional: bool = False,
          official_split: str | None = None) -> None:
    for stem, image in images.items():
        mask = masks.get(stem)
        if mask is None and not mask_optional:
            found.reject(image, "missing mask")
            continue
        label = defect_class(stem)
        if label is False:  # the class reader rejected it already
            continue
        found.records.append(SourceRecord(f"{id_prefix}{stem}", label, str(image),
                                          str(mask) if mask else None, official_split))
    for stem, mask in masks.items():
        if stem not in images:
            found.reject(mask, "mask without an image")


def read_folder(src: Path) -> Discovery:
    """``images/`` and ``masks/`` with matching stems; optional ``classes.csv``."""
    found = Discovery()
    images = _by_stem(_require_folder(src / "images", "an images/ folder"), found)
    masks = _by_stem(_require_folder(src / "masks", "a masks/ folder"), found)
    classes: dict[str, str] = {}
    if (src / "classes.csv").is_file():
        with open(src / "classes.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("id") and row.get("defect_class"):
                    classes[row["id"]] = row["defect_class"].strip().lower()
    _pair(found, images, masks, defect_class=classes.get)
    return found


def read_sd900(src: Path) -> Discovery:
    """``Source Images/*.bmp`` and ``Ground truth/*.png``; class from the file prefix."""
    found = Discovery()
    images = _by_stem(_require_folder(src / "Source Images", "a 'Source Images' folder"), found)
    masks = _by_stem(_require_folder(src / "Ground truth", "a 'Ground truth' folder"), found)

    def defect_class(stem: str):
        prefix = re.match(r"[A-Za-z]+", stem)
        label = SD900_CLASSES.get(prefix.group(0).lower()) if prefix else None
        if label is None:
            found.reject(images[stem], f"unknown class prefix in {stem!r} (expected In, Pa or Sc)")
            return False
        return label

    _pair(found, images, masks, defect_class=defect_class)
    return found


def read_mtile(src: Path) -> Discovery:
    """``MT_<Class>/Imgs/*.jpg`` with the same-stem ``.png`` mask beside each image."""
    found = Discovery()
    class_folders = [p for p in _visible(src) if p.is_dir()]
    if not any(p.name.startswith("MT_") for p in class_folders):
        raise SourceError(f"{src} has no MT_<Class> folders: not a Magnetic Tile download")
    for folder in class_folders:
        label = folder.name[3:].lower() if folder.name.startswith("MT_") else None
        if label not in MTILE_CLASSES:
            found.reject(folder, f"unknown folder (expected MT_<Class> with a class in {MTILE_CLASSES})")
            continue
        imgs = folder / "Imgs"
        if not imgs.is_dir():
            found.reject(folder, "no Imgs folder inside")
            continue
        files = [p for p in _visible(imgs) if p.is_file()]
        if not files:
            found.reject(imgs, "empty folder")
            continue
        images = {p.stem: p for p in files if p.suffix.lower() in (".jpg", ".jpeg")}
        masks = {p.stem: p for p in files if p.suffix.lower() == ".png"}
        for path in files:
            if path.stem not in images and path.stem not in masks:
                found.reject(path, f"not an image file (extension {path.suffix or 'none'!r})")
        # MT_Free frames are defect-free: a missing mask there means an empty one.
        _pair(found, images, masks, id_prefix=f"{label}_", defect_class=lambda stem, c=label: c,
              mask_optional=label == "free")
    return found


def _dagm_flags(labels_txt: Path, found: Discovery) -> dict[str, bool]:
    """``Labels.txt``: a header line, then ``<index> <defective 0/1> <image> ...`` per frame."""
    flags: dict[str, bool] = {}
    if not labels_txt.is_file():
        return flags
    for number, line in enumerate(labels_txt.read_text(errors="replace").splitlines()[1:], start=2):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 3 or tokens[1] not in ("0", "1"):
            found.reject(labels_txt, f"line {number} is malformed: {line.strip()!r}")
            continue
        flags[Path(tokens[2]).stem] = tokens[1] == "1"
    return flags


def read_dagm(src: Path) -> Discovery:
    """``Class<k>/{Train,Test}/*.PNG`` with ``Label/Labels.txt`` and ``Label/<id>_label.PNG``."""
    found = Discovery()
    class_folders = [p for p in _visible(src) if p.is_dir()]
    if not any(re.fullmatch(r"Class\d+", p.name) for p in class_folders):
        raise SourceError(f"{src} has no Class<k> folders: not a DAGM 2007 download")
    for folder in class_folders:
        if not re.fullmatch(r"Class\d+", folder.name):
            found.reject(folder, "unknown folder (expected Class<k>)")
            continue
        label = folder.name.lower()
        for official in ("Train", "Test"):
            part = folder / official
            if not part.is_dir():
                found.reject(part, "missing folder")
                continue
            label_dir = part / "Label"
            images = _by_stem(part, found, skip=lambda p: p.name == "Label")
            if not images:
                found.reject(part, "empty folder")
                continue
            masks = {}
            if label_dir.is_dir():
                masks = {p.stem[: -len("_label")]: p for p in _visible(label_dir)
                         if _is_image(p) and p.stem.endswith("_label")}
            flags = _dagm_flags(label_dir / "Labels.txt", found)
            split = official.lower()
            for stem, image in images.items():
                if stem not in masks and flags.get(stem, False):
                    found.reject(image, "missing mask: Labels.txt marks it defective but "
                                        f"Label/{stem}_label.PNG does not exist")
                    continue
                found.records.append(SourceRecord(
                    f"{label}_{split}_{stem}", label, str(image),
                    str(masks[stem]) if stem in masks else None, split))
    return found


_READERS = {"folder": read_folder, "sd900": read_sd900, "mtile": read_mtile, "dagm": read_dagm}


def discover(source_format: str, src: str | Path) -> Discovery:
    """Find every sample of ``src`` in the given layout."""
    if source_format not in _READERS:
        raise SourceError(f"unknown format {source_format!r}; choose one of {FORMATS}")
    src = Path(src)
    if not src.is_dir():
        raise SourceError(f"source folder {src} does not exist")
    if not _visible(src):
        raise SourceError(f"source folder {src} is empty")
    found = _READERS[source_format](src)
    if not found.records and not found.rejected:
        raise SourceError(f"no images found in {src} ({source_format} layout)")
    seen: dict[str, str] = {}
    unique = []
    for record in found.records:
        if record.id in seen:
            found.reject(Path(record.image_path), f"duplicate id {record.id!r} (also {seen[record.id]})")
        else:
            seen[record.id] = record.image_path
            unique.append(record)
    found.records = unique
    return found
