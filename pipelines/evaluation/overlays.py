"""Validation overlays: image | ground truth | predicted probability heat map, one PNG."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def overlay_panel(image: np.ndarray, mask: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Three side-by-side panels at the image's size, RGB uint8."""
    truth = np.repeat(((np.asarray(mask) > 0) * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    heat = cv2.applyColorMap(np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return np.concatenate([image, truth, heat], axis=1)


def write_overlay(path: str | Path, image: np.ndarray, mask: np.ndarray, prob: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    panel = overlay_panel(image, mask, prob)
    if not cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write overlay {path}")
    return path
