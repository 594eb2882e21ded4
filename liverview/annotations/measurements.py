"""Per-ROI and per-lesion measurements in physical units from the series geometry."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from liverview.annotations.document import Lesion, Roi
from liverview.imaging.measure import diameters_mm, mask_long_axis_mm, polygon_area_mm2, polygon_mask, region_stats
from liverview.io.volume import Volume


@dataclass(frozen=True)
class RoiMeasurement:
    area_mm2: float
    long_axis_mm: float
    short_axis_mm: float
    mean: float
    sd: float
    min: float
    max: float
    n_pixels: int


@dataclass(frozen=True)
class LesionMeasurement:
    """Long/short axis from the slice where the outline is longest (RECIST); volume from all slices."""

    n_slices: int
    long_axis_mm: float
    short_axis_mm: float
    area_mm2: float
    volume_ml: float
    mean: float
    sd: float
    min: float
    max: float
    n_voxels: int
    long_axis_slice: int


#: Decimals of each lesion measurement wherever liverview shows or exports it (lesion table, CSV):
#: one rounding, so a number reads the same everywhere.
DECIMALS = {"long_axis_mm": 1, "short_axis_mm": 1, "area_mm2": 1, "volume_ml": 2, "mean": 1, "sd": 1,
            "min": 0, "max": 0}


def format_measurement(m: LesionMeasurement, name: str) -> str:
    """`m.<name>` as text with its `DECIMALS`; "" when undefined (no voxel)."""
    value = getattr(m, name)
    return "" if value is None or math.isnan(value) else f"{value:.{DECIMALS[name]}f}"


def _spacing_yx(volume: Volume) -> tuple[float, float]:
    return volume.spacing_mm[1], volume.spacing_mm[2]


def roi_mask(volume: Volume, roi: Roi) -> np.ndarray:
    return polygon_mask(roi.points_xy, volume.array.shape[1:])


def measure_roi(volume: Volume, roi: Roi) -> RoiMeasurement:
    spacing = _spacing_yx(volume)
    long_axis, short_axis = diameters_mm(roi.points_xy, spacing)
    mask = roi_mask(volume, roi)
    stats = region_stats(volume.array[roi.slice_index], mask)
    return RoiMeasurement(polygon_area_mm2(roi.points_xy, spacing), long_axis, short_axis,
                          stats.mean, stats.sd, stats.min, stats.max, stats.n_voxels)


def slice_masks(volume: Volume, lesion: Lesion) -> dict[int, np.ndarray]:
    """Per slice, the union of the lesion's outlines there (2-D masks; cheap for large series)."""
    masks: dict[int, np.ndarray] = {}
    for roi in lesion.rois:
        if 0 <= roi.slice_index < volume.array.shape[0]:
            mask = roi_mask(volume, roi)
            masks[roi.slice_index] = masks[roi.slice_index] | mask if roi.slice_index in masks else mask
    return masks


def select_key_slice_by_area(areas: dict[int, int]) -> int:
    """A lesion's key slice from {slice index: mask area}: the largest area; ties go to the slice nearest
    the lesion's middle. The slice the model reads, and the one the app shows when it goes to a lesion."""
    occupied = sorted(z for z, a in areas.items() if a > 0)
    if not occupied:
        raise ValueError("the lesion mask is empty")
    largest = max(areas[z] for z in occupied)
    middle = (occupied[0] + occupied[-1]) / 2.0
    return min((z for z in occupied if areas[z] == largest), key=lambda z: (abs(z - middle), z))


def lesion_key_slice(volume: Volume, lesion: Lesion) -> int | None:
    """`select_key_slice_by_area` of the lesion's outlines on `volume`; None when none covers a pixel."""
    areas = {z: int(m.sum()) for z, m in slice_masks(volume, lesion).items()}
    return select_key_slice_by_area(areas) if any(areas.values()) else None


def slice_long_axis_mm(volume: Volume, lesion: Lesion, slice_index: int) -> float | None:
    """The long axis (mm) of the lesion's outline on one slice, as the phase reader's scores measure it on
    the key slice (`phase_reader.size_band`); None when no outline lies there. Only that slice's outlines
    are drawn (the panel asks on every selection)."""
    there = [roi_mask(volume, roi) for roi in lesion.rois if roi.slice_index == slice_index]
    mask = np.logical_or.reduce(there) if there else None
    return mask_long_axis_mm(mask, _spacing_yx(volume)) if mask is not None and mask.any() else None


def lesion_mask(volume: Volume, lesion: Lesion) -> np.ndarray:
    """3-D boolean mask (z, y, x): the union of the lesion's outlines on each slice."""
    mask = np.zeros(volume.array.shape, dtype=bool)
    for z, plane in slice_masks(volume, lesion).items():
        mask[z] = plane
    return mask


def measure_lesion(volume: Volume, lesion: Lesion) -> LesionMeasurement:
    masks = slice_masks(volume, lesion)
    values = np.concatenate([volume.array[z][m] for z, m in masks.items()]) if masks else np.zeros(0)
    stats = region_stats(values, np.ones(values.shape, dtype=bool))
    voxel_mm3 = float(np.prod(volume.spacing_mm))
    spacing = _spacing_yx(volume)
    best = (0.0, 0.0, -1)
    for roi in lesion.rois:
        long_axis, short_axis = diameters_mm(roi.points_xy, spacing)
        if long_axis > best[0]:
            best = (long_axis, short_axis, roi.slice_index)
    # The largest cross-section: the outlines of one slice together (an eraser stroke through a lesion
    # leaves two on its slice, and the volume counts both).
    per_slice: dict[int, float] = {}
    for roi in lesion.rois:
        per_slice[roi.slice_index] = per_slice.get(roi.slice_index, 0.0) + polygon_area_mm2(roi.points_xy, spacing)
    area = max(per_slice.values(), default=0.0)
    return LesionMeasurement(
        n_slices=len(masks), long_axis_mm=best[0], short_axis_mm=best[1], area_mm2=area,
        volume_ml=stats.n_voxels * voxel_mm3 / 1000.0, mean=stats.mean, sd=stats.sd, min=stats.min,
        max=stats.max, n_voxels=stats.n_voxels, long_axis_slice=best[2],
    )


def find_lesion_to_join(volume: Volume, lesions: list[Lesion], reader: str, slice_index: int,
                        mask: np.ndarray) -> Lesion | None:
    """The reader's lesion that a new outline continues: one with an outline on a neighbouring slice
    that overlaps it (at least 30 % of the smaller of the two), and none on this slice yet."""
    best: tuple[float, Lesion | None] = (0.0, None)
    area = int(mask.sum())
    if area == 0:
        return None
    for lesion in lesions:
        if lesion.reader != reader or lesion.rois_on(slice_index):
            continue
        for roi in lesion.rois:
            if abs(roi.slice_index - slice_index) != 1:
                continue
            other = roi_mask(volume, roi)
            overlap = int((other & mask).sum()) / max(1, min(area, int(other.sum())))
            if overlap >= 0.3 and overlap > best[0]:
                best = (overlap, lesion)
    return best[1]


def format_hu(value: float, is_hu: bool) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.0f} HU" if is_hu else f"{value:.0f}"
