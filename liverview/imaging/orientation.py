"""Patient-orientation letters (A/P/R/L/S/I) and the screen axes of the three orthogonal views.

DICOM patient coordinates are LPS: +x toward the patient's Left, +y Posterior, +z Superior.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))


def direction_letters(direction: Sequence[float] | np.ndarray, threshold: float = 0.25) -> str:
    """Letters of the patient directions a screen direction points to, strongest first ("L", "LP"...)."""
    vec = np.asarray(direction, dtype=float)
    order = np.argsort(-np.abs(vec))
    letters: list[str] = []
    for axis in order[:2]:
        if abs(vec[axis]) >= threshold or not letters:
            letters.append(_LETTERS[axis][1 if vec[axis] > 0 else 0])
    return "".join(letters)


@dataclass(frozen=True)
class ViewAxes:
    """How one view maps the (z, y, x) volume onto the screen.

    `slice_axis` is the array axis the view steps through; the image shown is the 2-D array with
    screen rows along `row_axis` (flipped when `flip_rows`, so the patient's head is up) and screen
    columns along `col_axis`. `right`/`down` are patient directions of screen right and screen down.
    """

    name: str
    slice_axis: int
    row_axis: int
    col_axis: int
    flip_rows: bool
    right: tuple[float, float, float]
    down: tuple[float, float, float]

    def letters(self) -> dict[str, str]:
        right, down = np.asarray(self.right), np.asarray(self.down)
        return {"right": direction_letters(right), "left": direction_letters(-right),
                "bottom": direction_letters(down), "top": direction_letters(-down)}


def _vector(values: Sequence[float]) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return x, y, z


def view_axes(row_direction: Sequence[float], column_direction: Sequence[float],
              normal: Sequence[float]) -> tuple[ViewAxes, ViewAxes, ViewAxes]:
    """The acquired plane and the two reformats through the other array axes.

    Reformats put the slice axis vertically, oriented so that Superior (or, failing that, the
    patient direction the normal is closest to) is at the top, as radiologists expect.
    """
    row, col, nrm = (_vector(d) for d in (row_direction, column_direction, normal))
    # Flip when index 0 of the slice axis would otherwise be at the top but points inferior/anterior/right.
    dominant = int(np.argmax(np.abs(nrm)))
    flip = nrm[dominant] > 0 if dominant == 2 else nrm[dominant] < 0
    down_along_slices = _vector([-v for v in nrm]) if flip else nrm
    acquired = ViewAxes("acquired", 0, 1, 2, False, row, col)
    across_rows = ViewAxes("reformat-rows", 1, 0, 2, flip, row, down_along_slices)
    across_cols = ViewAxes("reformat-cols", 2, 0, 1, flip, col, down_along_slices)
    return acquired, across_rows, across_cols


def plane_title(direction_normal: Sequence[float]) -> str:
    """Axial / Coronal / Sagittal / Oblique for a plane with this normal."""
    vec = np.abs(np.asarray(direction_normal, dtype=float))
    axis = int(np.argmax(vec))
    if vec[axis] < 0.8:
        return "Oblique"
    return ("Sagittal", "Coronal", "Axial")[axis]
