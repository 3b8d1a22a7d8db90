"""Tiny datasets written in each original download layout, bad files included."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def frame(size: int | tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grey frame with a bright square defect, and its 0/255 mask."""
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 120, (height, width), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    top, left = height // 4, width // 4
    mask[top:top + height // 4, left:left + width // 3] = 255
    image[mask > 0] = 220
    return image, mask


def write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image), path
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def grey_ramp(shape: tuple[int, int]) -> np.ndarray:
    """Not a mask at all: a smooth ramp, mostly grey after thresholding."""
    return np.tile(np.linspace(0, 255, shape[1]).astype(np.uint8), (shape[0], 1))


@pytest.fixture
def folder_source(tmp_path: Path) -> Path:
    """``images/`` + ``masks/``: 8 good pairs (png/jpg/bmp/tif) and 5 bad files."""
    root = tmp_path / "folder"
    for i, ext in enumerate([".png", ".jpg", ".bmp", ".tif"] * 2):
        image, mask = frame(32, i)
        write(root / "images" / f"good{i}{ext}", image)
        write(root / "masks" / f"good{i}.png", mask if i % 4 else np.zeros_like(mask))
    image, mask = frame(32, 99)
    write(root / "images" / "no_mask.png", image)
    truncate(write(root / "images" / "truncated.png", image))
    write(root / "masks" / "truncated.png", mask)
    write(root / "images" / "grey_mask.png", image)
    write(root / "masks" / "grey_mask.png", grey_ramp(mask.shape))
    write(root / "images" / "wrong_size.png", image)
    write(root / "masks" / "wrong_size.png", np.zeros((16, 32), np.uint8))
    write(root / "masks" / "orphan.png", mask)
    return root


@pytest.fixture
def sd900_source(tmp_path: Path) -> Path:
    """``Source Images/*.bmp`` + ``Ground truth/*.png``: 4 per class, 3 bad files."""
    root = tmp_path / "SD-saliency-900"
    for prefix in ("In", "Pa", "Sc"):
        for k in range(1, 5):
            image, mask = frame(40, 10 * ord(prefix[0]) + k)
            write(root / "Source Images" / f"{prefix}_{k}.bmp", image)
            write(root / "Ground truth" / f"{prefix}_{k}.png", mask)
    image, mask = frame(40, 7)
    write(root / "Source Images" / "Sc_9.bmp", image)  # no ground truth
    write(root / "Source Images" / "Xx_1.bmp", image)  # unknown class prefix
    write(root / "Ground truth" / "Xx_1.png", mask)
    truncate(write(root / "Source Images" / "In_7.bmp", image))
    write(root / "Ground truth" / "In_7.png", mask)
    return root


@pytest.fixture
def mtile_source(tmp_path: Path) -> Path:
    """``MT_<Class>/Imgs/*.jpg`` with ``.png`` masks beside them; sizes vary."""
    root = tmp_path / "Magnetic-tile-defect-datasets"
    for c, name in enumerate(("Blowhole", "Crack", "Free")):
        for k in range(3):
            image, mask = frame((30 + 6 * k, 40 + 4 * c), 10 * c + k)
            write(root / f"MT_{name}" / "Imgs" / f"exp{k}_num_{100 + k}.jpg", image)
            write(root / f"MT_{name}" / "Imgs" / f"exp{k}_num_{100 + k}.png",
                  np.zeros_like(mask) if name == "Free" else mask)
    image, _ = frame(32, 5)
    write(root / "MT_Crack" / "Imgs" / "exp9_num_9.jpg", image)  # mask missing
    (root / "MT_Fray" / "Imgs").mkdir(parents=True)  # empty
    write(root / "MT_Rust" / "Imgs" / "exp0_num_1.jpg", image)  # unknown class
    (root / "README.md").write_text("Magnetic tile defects\n")
    return root


def _labels_txt(flags: dict[str, int]) -> str:
    lines = ["1"]
    for index, (stem, flag) in enumerate(sorted(flags.items()), start=1):
        label = f"{stem}_label.PNG" if flag else ""
        lines.append(f"{index}\t{flag}\t{stem}.PNG\t0\t{label}".rstrip())
    return "\n".join(lines) + "\n"


@pytest.fixture
def dagm_source(tmp_path: Path) -> Path:
    """``Class<k>/{Train,Test}/*.PNG`` with ``Label/Labels.txt`` and ``<id>_label.PNG``."""
    root = tmp_path / "DAGM2007"
    for k in (1, 2):
        for official, count in (("Train", 6), ("Test", 3)):
            part = root / f"Class{k}" / official
            flags = {}
            for n in range(1, count + 1):
                stem = f"{n:04d}"
                image, mask = frame(32, 100 * k + n)
                write(part / f"{stem}.PNG", image)
                flags[stem] = int(n % 2 == 0)
                if flags[stem]:
                    write(part / "Label" / f"{stem}_label.PNG", mask)
            (part / "Label").mkdir(exist_ok=True)
            (part / "Label" / "Labels.txt").write_text(_labels_txt(flags))
    # Labels.txt says defective, but the label image is missing.
    image, _ = frame(32, 1)
    write(root / "Class2" / "Train" / "0010.PNG", image)
    labels = root / "Class2" / "Train" / "Label" / "Labels.txt"
    labels.write_text(labels.read_text() + "7\t1\t0010.PNG\t0\t0010_label.PNG\n")
    (root / "Class1_def").mkdir()
    return root
