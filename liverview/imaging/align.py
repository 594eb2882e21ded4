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
    """Values of `array` (z, y, x) at fractional indices (N, 3), trilinear; NaN outside the array.

    The eight corners are gathered from the flattened array by precomputed offsets (the alignment
    samples about 30,000 points 14 times per phase and lesion); the arithmetic, and so every value, is
    that of the plain three-index form."""
    zyx = np.asarray(zyx, dtype=float)
    shape = np.asarray(array.shape)
    inside = np.ones(len(zyx), dtype=bool)
    for axis, coordinate in enumerate(zyx.T):  # per axis: a reduction over rows of 3 is several times slower
        inside &= (coordinate >= 0) & (coordinate <= shape[axis] - 1)
    out = np.full(len(zyx), np.nan, dtype=np.float32)
    if not inside.any():
        return out
    p = zyx if inside.all() else zyx[inside]
    base = np.minimum(np.floor(p).astype(np.intp), shape - 2).clip(0)
    frac = p - base
    if array.shape[0] == 1:
        base[:, 0], frac[:, 0] = 0, 0.0
    corner = [[base[:, axis], np.minimum(base[:, axis] + 1, shape[axis] - 1)] for axis in range(3)]
    # The points cover a small block of a large volume: copied out, its corners are gathered from cache.
    low = base.min(axis=0)
    high = [pair[1].max() for pair in corner]
    block = np.ascontiguousarray(array[low[0]:high[0] + 1, low[1]:high[1] + 1, low[2]:high[2] + 1])
    corner = [[c - low[axis] for c in pair] for axis, pair in enumerate(corner)]
    flat = block.reshape(-1)
    stride_z, stride_y = block.shape[1] * block.shape[2], block.shape[2]
    weights = [[1 - frac[:, axis], frac[:, axis]] for axis in range(3)]
    values = np.zeros(len(p), dtype=np.float64)
    for dz in (0, 1):
        offset_z = corner[0][dz] * stride_z
        for dy in (0, 1):
            offset_zy = offset_z + corner[1][dy] * stride_y
            weight_zy = weights[0][dz] * weights[1][dy]
            for dx in (0, 1):
                values += (weight_zy * weights[2][dx]) * flat[offset_zy + corner[2][dx]]
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


def align_neighbourhood(source: Volume, z: int, box_yx: tuple[int, int, int, int], target: Volume,
                        search_mm: float = SEARCH_MM) -> Alignment:
    """The translation (LPS mm) that best lays the neighbourhood of `box_yx` (y0, y1, x0, x1: the
    lesion's bounding box in pixels) on slices z-1..z+1 of `source` onto `target`.

    The target is sampled on the source's own voxel grid, so pixel size, field of view and slice
    positions may differ. Both are compared as edge maps of HU clipped to soft tissue (-150..250),
    where the liver's outline and vessels are. Along the slice normal the search steps 2 mm, then
    1 mm around the best, within `search_mm`; in-plane, every whole-pixel shift within `search_mm`
    is scored at once (normalised cross-correlation, `cv2.matchTemplate`). A longer shift has to
    fit better by `PENALTY_PER_MM` per mm."""
    dy, dx = source.spacing_mm[1:]
    margin_y, margin_x = int(round(NEIGHBOURHOOD_MM / dy)), int(round(NEIGHBOURHOOD_MM / dx))
    reach_y, reach_x = int(round(search_mm / dy)), int(round(search_mm / dx))
    y0, y1, x0, x1 = box_yx
    y0, x0 = max(0, y0 - margin_y), max(0, x0 - margin_x)
    y1, x1 = min(source.shape[1], y1 + margin_y), min(source.shape[2], x1 + margin_x)
    slices = [k for k in (z - 1, z, z + 1) if 0 <= k < source.shape[0]]
    # The target is sampled over the neighbourhood grown by the in-plane search reach.
    zs, ys, xs = np.meshgrid(np.asarray(slices, dtype=float), np.arange(y0 - reach_y, y1 + reach_y, dtype=float),
                             np.arange(x0 - reach_x, x1 + reach_x, dtype=float), indexing="ij")
    affine = source.affine_mm
    points = np.stack([zs.ravel(), ys.ravel(), xs.ravel()], axis=1) @ affine[:3, :3].T + affine[:3, 3]
    references = [_gradient(np.clip(source.array[k, y0:y1, x0:x1].astype(np.float32), -150, 250)) for k in slices]
    normal = np.asarray(source.normal, dtype=float)
    col, row = np.asarray(source.column_direction, dtype=float), np.asarray(source.row_direction, dtype=float)
    # In-plane offsets (mm) of each cell of matchTemplate's result, for the distance penalty.
    offsets_y = (np.arange(2 * reach_y + 1) - reach_y) * dy
    offsets_x = (np.arange(2 * reach_x + 1) - reach_x) * dx
    in_plane = np.hypot(offsets_y[:, None], offsets_x[None, :])

    def best_in_plane(along: float) -> tuple[float, float, np.ndarray, float]:
        """(penalised score, raw score, shift) of the best in-plane shift at `along` mm along the normal,
        and the raw score of no in-plane shift; -1 scores where the target covers too little."""
        values = sample_trilinear(target.array, target.patient_to_index(points + along * normal)).reshape(zs.shape)
        covered = np.isfinite(values)
        total = np.zeros((2 * reach_y + 1, 2 * reach_x + 1), dtype=np.float32)
        for reference, plane, inside in zip(references, values, covered):
            if inside.mean() < MIN_COVERAGE:
                return -1.0, -1.0, np.zeros(3), -1.0
            moved = _gradient(np.clip(np.nan_to_num(plane, nan=-150.0), -150, 250).astype(np.float32))
            # Pixels at the target's edge carry false edges from the fill.
            moved[cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)) == 0] = 0.0
            total += cv2.matchTemplate(moved, reference, cv2.TM_CCOEFF_NORMED)
        total /= len(references)
        penalised = total - PENALTY_PER_MM * np.hypot(in_plane, along)
        iy, ix = np.unravel_index(int(np.argmax(penalised)), penalised.shape)
        shift = along * normal + offsets_y[iy] * col + offsets_x[ix] * row
        return float(penalised[iy, ix]), float(total[iy, ix]), shift, float(total[reach_y, reach_x])

    candidates = {float(a): best_in_plane(float(a)) for a in np.arange(-2.0 * (search_mm // 2.0), search_mm + 0.5, 2.0)}
    coarse = max(candidates, key=lambda a: candidates[a][0])
    for along in (coarse - 1.0, coarse + 1.0):
        if abs(along) <= search_mm:
            candidates[along] = best_in_plane(along)
    _, best_score, best_shift, _ = candidates[max(candidates, key=lambda a: candidates[a][0])]
    return Alignment(tuple(float(v) for v in best_shift), best_score, candidates[0.0][3])  # type: ignore[arg-type]


__all__ = ["Alignment", "align_neighbourhood", "sample_trilinear"]
