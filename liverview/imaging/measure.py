"""Outlines to masks and measurements in physical units (mm, mm², mL, HU).

Points are pixel coordinates (x = column, y = row) with pixel centres at integers; spacing is
(row spacing, column spacing) in mm, from (0028,0030) Pixel Spacing.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


def polygon_mask(points_xy: Sequence[Sequence[float]], shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie inside the polygon (even-odd rule, half-open
    edges), so area and HU statistics do not depend on how a drawing library rasterises outlines."""
    mask = np.zeros(shape, dtype=bool)
    pts = np.asarray(points_xy, dtype=np.float64)
    if len(pts) < 3:
        return mask
    rows, cols = shape
    y_first = max(0, int(np.ceil(pts[:, 1].min())))
    y_last = min(rows - 1, int(np.floor(pts[:, 1].max())))
    if y_first > y_last:
        return mask
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    ys = np.arange(y_first, y_last + 1, dtype=np.float64)[:, None]
    crosses = ((y0 <= ys) & (ys < y1)) | ((y1 <= ys) & (ys < y0))
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = np.where(crosses, x0 + (ys - y0) * (x1 - x0) / (y1 - y0), np.nan)
    xs.sort(axis=1)
    for row, hits in zip(range(y_first, y_last + 1), xs):
        hits = hits[~np.isnan(hits)]
        for left, right in zip(hits[0::2], hits[1::2]):
            c0, c1 = max(0, int(np.ceil(left))), min(cols, int(np.ceil(right)))
            if c0 < c1:
                mask[row, c0:c1] = True
    return mask


def polygon_area_mm2(points_xy: Sequence[Sequence[float]], spacing_yx: tuple[float, float]) -> float:
    """Shoelace area of the outline in mm² (exact for the drawn polygon, independent of pixels)."""
    pts = np.asarray(points_xy, dtype=np.float64)
    if len(pts) < 3:
        return 0.0
    x, y = pts[:, 0] * spacing_yx[1], pts[:, 1] * spacing_yx[0]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def diameters_mm(points_xy: Sequence[Sequence[float]], spacing_yx: tuple[float, float]) -> tuple[float, float]:
    """Longest diameter and the greatest extent perpendicular to it, in mm (RECIST-style long and short
    axis; for convex outlines the perpendicular extent is the longest perpendicular chord)."""
    pts = np.asarray(points_xy, dtype=np.float64)
    if len(pts) < 2:
        return 0.0, 0.0
    mm = np.column_stack([pts[:, 0] * spacing_yx[1], pts[:, 1] * spacing_yx[0]])
    hull = cv2.convexHull(mm.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    diff = hull[:, None, :] - hull[None, :, :]
    dist = np.sqrt((diff ** 2).sum(-1))
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    longest = float(dist[i, j])
    if longest == 0:
        return 0.0, 0.0
    axis = (hull[j] - hull[i]) / longest
    normal = np.array([-axis[1], axis[0]])
    projection = hull @ normal
    return longest, float(projection.max() - projection.min())


#: A pixel's corners around its centre (x, y): a mask's size is measured edge to edge, as a reader measures.
_PIXEL_CORNERS = np.array([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]])


def mask_long_axis_mm(mask: np.ndarray, spacing_yx: tuple[float, float]) -> float:
    """Longest diameter (mm) of a bool (y, x) mask, from the outer edge of its pixels to the outer edge;
    0 when empty."""
    contours, _ = cv2.findContours(np.asarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 0.0
    centres = np.concatenate(contours).reshape(-1, 1, 2).astype(np.float64)
    return diameters_mm((centres + _PIXEL_CORNERS).reshape(-1, 2).tolist(), spacing_yx)[0]


@dataclass(frozen=True)
class RegionStats:
    """Voxel statistics of a region (HU for CT)."""

    n_voxels: int
    mean: float
    sd: float
    min: float
    max: float


def region_stats(values: np.ndarray, mask: np.ndarray) -> RegionStats:
    selected = values[mask]
    if selected.size == 0:
        return RegionStats(0, float("nan"), float("nan"), float("nan"), float("nan"))
    selected = selected.astype(np.float64)
    return RegionStats(int(selected.size), float(selected.mean()), float(selected.std()),
                       float(selected.min()), float(selected.max()))
