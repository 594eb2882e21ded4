"""Patient-orientation letters (A/P/R/L/S/I) and the screen axes of the three orthogonal views.

DICOM patient coordinates are LPS: +x toward the patient's Left, +y Posterior, +z Superior.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from liverview.io.volume import Volume

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
    screen rows along `row_axis` (flipped when `flip_rows`) and screen columns along `col_axis`
    (flipped when `flip_cols`), so that the patient's head (or front) is up. `right`/`down` are patient
    directions of screen right and screen down.
    """

    name: str
    slice_axis: int
    row_axis: int
    col_axis: int
    flip_rows: bool
    right: tuple[float, float, float]
    down: tuple[float, float, float]
    flip_cols: bool = False

    def letters(self) -> dict[str, str]:
        right, down = np.asarray(self.right), np.asarray(self.down)
        return {"right": direction_letters(right), "left": direction_letters(-right),
                "bottom": direction_letters(down), "top": direction_letters(-down)}


def _vector(values: Sequence[float]) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return x, y, z


#: Screen (right, down) of each plane, by the patient axis its normal is closest to, as radiologists
#: read them: axial with the patient's left on the right and the back down, coronal with the left on
#: the right and the feet down, sagittal with the back on the right and the feet down.
_SCREEN = {2: ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), 1: ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
           0: ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))}


def _reformat(name: str, slice_axis: int, directions: Sequence[tuple[float, float, float]]) -> ViewAxes:
    """The reformat through `slice_axis`: of its two in-plane array axes the one closer to the plane's
    screen "down" runs down the screen. Only the stack axis (0) is flipped where it points the other way:
    an axis of the stored image keeps its stored direction, so that the reformats agree with the acquired
    view, which is shown as stored (a prone series' left stays on the same side in every view)."""
    right_target, down_target = _SCREEN[int(np.argmax(np.abs(directions[slice_axis])))]
    first, second = (axis for axis in range(3) if axis != slice_axis)
    along = {axis: abs(float(np.dot(directions[axis], down_target))) for axis in (first, second)}
    row_axis = first if along[first] >= along[second] else second
    col_axis = second if row_axis == first else first
    flip_rows = row_axis == 0 and float(np.dot(directions[row_axis], down_target)) < 0
    flip_cols = col_axis == 0 and float(np.dot(directions[col_axis], right_target)) < 0
    down = _vector([-v for v in directions[row_axis]]) if flip_rows else directions[row_axis]
    right = _vector([-v for v in directions[col_axis]]) if flip_cols else directions[col_axis]
    return ViewAxes(name, slice_axis, row_axis, col_axis, flip_rows, right, down, flip_cols)


def view_axes(row_direction: Sequence[float], column_direction: Sequence[float],
              normal: Sequence[float]) -> tuple[ViewAxes, ViewAxes, ViewAxes]:
    """The acquired plane (as stored) and the two reformats through the other array axes, each shown
    as radiologists read that plane (`_SCREEN`): for an axial series the slices run down the
    reformats, head up; for a coronal or sagittal one the stored rows do."""
    row, col, nrm = (_vector(d) for d in (row_direction, column_direction, normal))
    directions = (nrm, col, row)  # the patient direction of array axes z, y, x
    acquired = ViewAxes("acquired", 0, 1, 2, False, row, col)
    return acquired, _reformat("reformat-rows", 1, directions), _reformat("reformat-cols", 2, directions)


def plane_title(direction_normal: Sequence[float]) -> str:
    """Axial / Coronal / Sagittal / Oblique for a plane with this normal."""
    vec = np.abs(np.asarray(direction_normal, dtype=float))
    axis = int(np.argmax(vec))
    if vec[axis] < 0.8:
        return "Oblique"
    return ("Sagittal", "Coronal", "Axial")[axis]


def reading_sign(direction: Sequence[float] | np.ndarray) -> int:
    """+1 when stepping along `direction` (LPS, the way a stack's index grows) is the way a reader pages
    through it, -1 when it runs the other way. Readers page from the head toward the feet (axial), from
    the front toward the back (coronal) and from the patient's right toward the left (sagittal), as
    PACS viewers and CT instance numbers do; the direction's dominant axis decides which."""
    vec = np.asarray(direction, dtype=float)
    axis = int(np.argmax(np.abs(vec)))
    toward = (1.0, 1.0, -1.0)[axis]  # +x Left, +y Posterior, -z Inferior
    return 1 if vec[axis] * toward > 0 else -1


def reading_number(index: int, count: int, sign: int) -> int:
    """The 1-based number a reader sees for array index `index` of `count`, counted in reading order
    (`reading_sign` of the stack's direction)."""
    return index + 1 if sign > 0 else count - index


def reading_position_mm(point_mm: Sequence[float] | np.ndarray, direction: Sequence[float] | np.ndarray) -> float:
    """A point's position along a stack (mm), as the scanner writes Slice Location: its LPS coordinate
    along the direction's dominant axis (z for axial, y for coronal, x for sagittal), whichever way the
    stack runs; for an oblique stack, along the direction turned so that axis counts positive."""
    vec = np.asarray(direction, dtype=float)
    vec = vec / (np.linalg.norm(vec) or 1.0)
    if vec[int(np.argmax(np.abs(vec)))] < 0:
        vec = -vec
    return float(np.dot(np.asarray(point_mm, dtype=float), vec))


def axis_direction(volume: Volume, axis: int) -> np.ndarray:
    """The LPS direction in which `volume`'s array index along `axis` (z, y, x) grows."""
    if axis == 0:
        positions = np.asarray(volume.positions_mm, dtype=float)
        if len(positions) > 1 and np.linalg.norm(positions[-1] - positions[0]) > 0:
            return positions[-1] - positions[0]
        return np.asarray(volume.normal, dtype=float)
    return np.asarray(volume.column_direction if axis == 1 else volume.row_direction, dtype=float)


def slice_number(volume: Volume, index: int, axis: int = 0) -> int:
    """The 1-based number a reader sees for slice `index` along `axis`, in reading order (slice 1 of an
    axial series is its top slice); the number every message and table gives."""
    return reading_number(index, volume.array.shape[axis], reading_sign(axis_direction(volume, axis)))
