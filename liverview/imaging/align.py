"""Reading one series at the patient coordinates of another: sampling and a local rigid alignment.

Phases of one study share a Frame of Reference, but the patient breathes between them: the liver moves
by a few millimetres. `align_neighbourhood` finds the translation (mm, LPS) that best lays the
lesion's neighbourhood in one series onto another. Intensities differ between phases (that is the
point of them), so the match compares edges: normalised cross-correlation of gradient magnitudes.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from liverview.io.volume import Volume

#: Largest breathing shift searched for, in mm along each axis.
SEARCH_MM = 10.0
#: Margin around the lesion that the alignment compares, in mm.
NEIGHBOURHOOD_MM = 20.0
#: Correlation a shift must gain per mm of its length: between breath-holds the liver moves a few mm,
#: so a far shift has to fit clearly better than a near one (repetitive edges at 5 mm slices otherwise
#: pull the search 10 mm off on a few lesions).
PENALTY_PER_MM = 0.01
#: Share of the neighbourhood that must lie inside the target for a shift to be scored.
MIN_COVERAGE = 0.7


def sample_trilinear(array: np.ndarray, zyx: np.ndarray) -> np.ndarray:
    """Values of `array` (z, y, x) at fractional indices (N, 3), trilinear; NaN outside the array."""
    zyx = np.asarray(zyx, dtype=float)
    shape = np.asarray(array.shape)
    inside = np.all((zyx >= 0) & (zyx <= shape - 1), axis=1)
    out = np.full(len(zyx), np.nan, dtype=np.float32)
    if not inside.any():
        return out
    p = zyx[inside]
    base = np.minimum(np.floor(p).astype(int), shape - 2).clip(0)
    frac = p - base
    if array.shape[0] == 1:
        base[:, 0], frac[:, 0] = 0, 0.0
    values = np.zeros(len(p), dtype=np.float64)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                weight = ((frac[:, 0] if dz else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
                          * (frac[:, 2] if dx else 1 - frac[:, 2]))
                z = np.minimum(base[:, 0] + dz, shape[0] - 1)
                values += weight * array[z, np.minimum(base[:, 1] + dy, shape[1] - 1), np.minimum(base[:, 2] + dx, shape[2] - 1)]
    out[inside] = values
    return out


@dataclass(frozen=True)
class Alignment:
    #: Add to a point of the source series to find it in the target series (LPS, mm).
    shift_mm: tuple[float, float, float]
    #: Edge correlation after the shift, and with none (-1..1).
    score: float
    score_unshifted: float


def _gradient(image: np.ndarray) -> np.ndarray:
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)
    return np.sqrt(gx * gx + gy * gy)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    valid = np.isfinite(a) & np.isfinite(b)
    if valid.sum() < 50:
        return -1.0
    a, b = a[valid] - a[valid].mean(), b[valid] - b[valid].mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else -1.0


def align_neighbourhood(source: Volume, z: int, box_yx: tuple[int, int, int, int], target: Volume,
                        search_mm: float = SEARCH_MM) -> Alignment:
    """The translation (LPS mm) that best lays the neighbourhood of `box_yx` (y0, y1, x0, x1: the
    lesion's bounding box in pixels) on slices z-1..z+1 of `source` onto `target`.

    The target is sampled at the source's own voxel positions, so pixel size, field of view and slice
    positions may differ. Both are compared as edge maps of HU clipped to soft tissue (-150..250),
    where the liver's outline and vessels are. The search runs within `search_mm` on every axis, coarse to
    fine: 4 mm steps, then 2 mm and 1 mm around the best."""
    dy, dx = source.spacing_mm[1:]
    margin_y, margin_x = int(round(NEIGHBOURHOOD_MM / dy)), int(round(NEIGHBOURHOOD_MM / dx))
    y0, y1, x0, x1 = box_yx
    y0, x0 = max(0, y0 - margin_y), max(0, x0 - margin_x)
    y1, x1 = min(source.shape[1], y1 + margin_y), min(source.shape[2], x1 + margin_x)
    slices = [k for k in (z - 1, z, z + 1) if 0 <= k < source.shape[0]]
    zs, ys, xs = np.meshgrid(np.asarray(slices, dtype=float), np.arange(y0, y1, dtype=float),
                             np.arange(x0, x1, dtype=float), indexing="ij")
    affine = source.affine_mm
    points = np.stack([zs.ravel(), ys.ravel(), xs.ravel()], axis=1) @ affine[:3, :3].T + affine[:3, 3]
    shape = zs.shape
    reference = np.stack([_gradient(np.clip(source.array[k, y0:y1, x0:x1].astype(np.float32), -150, 250)) for k in slices])
    axes = [np.asarray(v, dtype=float) for v in (source.column_direction, source.row_direction, source.normal)]

    def score(shift: np.ndarray) -> float:
        values = sample_trilinear(target.array, target.patient_to_index(points + shift)).reshape(shape)
        # Pixels next to the target's edge get false edges from the fill: they do not count, and a
        # shift that leaves less than MIN_COVERAGE of the neighbourhood inside the target is not scored.
        valid = np.stack([cv2.erode(np.isfinite(v).astype(np.uint8), np.ones((3, 3), np.uint8)) for v in values]) > 0
        if valid.mean() < MIN_COVERAGE:
            return -1.0
        moved = np.stack([_gradient(np.clip(np.nan_to_num(v, nan=-150.0), -150, 250).astype(np.float32)) for v in values])
        moved[~valid] = np.nan
        return _ncc(reference, moved)

    unshifted = score(np.zeros(3))
    best_shift, best = np.zeros(3), unshifted
    coarse = np.arange(-4.0 * (search_mm // 4.0), search_mm + 0.5, 4.0)
    for offsets, centre in ((coarse, None), (np.array([-2.0, 0.0, 2.0]), True), (np.array([-1.0, 0.0, 1.0]), True)):
        origin = best_shift.copy() if centre else np.zeros(3)
        for a in offsets:
            for b in offsets:
                for c in offsets:
                    shift = origin + a * axes[0] + b * axes[1] + c * axes[2]
                    if np.abs(shift).max() > search_mm + 1e-6:
                        continue
                    value = score(shift) - PENALTY_PER_MM * float(np.linalg.norm(shift))
                    if value > best:
                        best, best_shift = value, shift
    return Alignment(tuple(float(v) for v in best_shift), score(best_shift), unshifted)  # type: ignore[arg-type]


__all__ = ["Alignment", "align_neighbourhood", "sample_trilinear"]
