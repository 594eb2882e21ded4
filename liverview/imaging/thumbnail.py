"""Small greyscale previews for the series browser."""
from __future__ import annotations

import cv2
import numpy as np

from liverview.imaging.window import CT_PRESETS, apply_window, auto_window


def make_thumbnail(image: np.ndarray, is_hu: bool, size: int = 96, invert: bool = False) -> np.ndarray:
    """uint8 square thumbnail (letterboxed) of a 2-D slice: abdomen window for CT, percentiles otherwise."""
    preset = CT_PRESETS[1] if is_hu else auto_window(image)
    grey = apply_window(image, preset.center, preset.width, invert=invert)
    rows, cols = grey.shape
    scale = size / max(rows, cols)
    new_rows, new_cols = max(1, round(rows * scale)), max(1, round(cols * scale))
    small = cv2.resize(grey, (new_cols, new_rows), interpolation=cv2.INTER_AREA)
    out = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - new_rows) // 2, (size - new_cols) // 2
    out[top:top + new_rows, left:left + new_cols] = small
    return out
