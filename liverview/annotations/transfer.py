"""One lesion, every phase: an outline drawn on one series placed on another series of the study.

The outline stays where it was drawn (its provenance is that series' pixel grid). On another series of
the same Frame of Reference it is carried by patient coordinates: each polygon vertex goes to LPS mm
and into the other series' pixel grid, so a different field of view, reconstruction centre, pixel
size or slice thickness changes nothing. A slice of the other series takes the outline of the drawn
slice nearest to it, as long as their slabs overlap (a 5 mm slice covers two 2.5 mm ones, a 2.5 mm
outline reaches the 5 mm slice that contains it). The breathing shift between phases is then found
by `imaging.align` around the lesion and applied, and reported.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liverview.annotations.document import Lesion, Roi
from liverview.annotations.measurements import slice_masks
from liverview.imaging.align import Alignment, align_neighbourhood
from liverview.io.volume import Volume


class TransferError(ValueError):
    """The lesion cannot be read on the other series; the message says why."""


@dataclass(frozen=True)
class Transfer:
    """The lesion as it lies on the target series, and how it got there."""

    lesion: Lesion
    #: The breathing shift applied (LPS mm); zeros when alignment was not asked for or found nothing better.
    shift_mm: tuple[float, float, float]
    alignment: Alignment | None
    #: Target slice -> the source slice whose outline it took.
    slice_map: dict[int, int]


def _slab(volume: Volume) -> float:
    return float(volume.info.slice_thickness_mm or volume.spacing_mm[0])


def map_slices(source: Volume, target: Volume, source_slices: list[int], shift_mm: np.ndarray) -> dict[int, int]:
    """For every target slice whose slab overlaps a source slice with an outline, the nearest such
    source slice (by distance along the target's normal)."""
    normal = np.asarray(target.normal, dtype=float)
    source_at = {z: float((source.positions_mm[z] + shift_mm) @ normal) for z in source_slices}
    half = 0.5 * (_slab(source) + _slab(target))
    mapping: dict[int, int] = {}
    for zt, position in enumerate(target.positions_mm):
        at = float(position @ normal)
        nearest = min(source_slices, key=lambda z: abs(source_at[z] - at))
        if abs(source_at[nearest] - at) < half - 1e-6:
            mapping[zt] = nearest
    return mapping


def transfer_lesion(lesion: Lesion, source: Volume, target: Volume, *, align: bool = True) -> Transfer:
    """`lesion` (outlined on `source`) placed on `target`. Raises `TransferError` for another Frame of
    Reference, non-parallel planes, or an outline that falls outside the target's images."""
    if source.frame_of_reference_uid != target.frame_of_reference_uid or not source.frame_of_reference_uid:
        raise TransferError(f"series {target.info.describe()!r} has another Frame of Reference "
                            f"({target.frame_of_reference_uid or 'none'}) than the outlined series "
                            f"({source.frame_of_reference_uid or 'none'}): its positions cannot be compared, so "
                            "only the outlined series is read")
    if abs(float(np.dot(source.normal, target.normal))) < 0.99:
        raise TransferError(f"series {target.info.describe()!r} is not parallel to the outlined series "
                            f"({target.info.plane} against {source.info.plane})")
    if not lesion.rois:
        raise TransferError(f"lesion {lesion.id} has no outline")
    shift = np.zeros(3)
    alignment = None
    if align:
        masks = {z: m for z, m in slice_masks(source, lesion).items() if m.any()}
        if masks:
            key = max(masks, key=lambda z: int(masks[z].sum()))
            ys, xs = np.nonzero(masks[key])
            alignment = align_neighbourhood(source, key, (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1),
                                            target)
            if alignment.score > alignment.score_unshifted:
                shift = np.asarray(alignment.shift_mm)
    by_slice: dict[int, list[Roi]] = {}
    for roi in lesion.rois:
        by_slice.setdefault(roi.slice_index, []).append(roi)
    mapping = map_slices(source, target, sorted(by_slice), shift)
    if not mapping:
        raise TransferError(f"lesion {lesion.id} lies outside series {target.info.describe()!r} (no slice of it "
                            "covers the outlined slices)")
    affine = source.affine_mm
    rois: list[Roi] = []
    for zt, zs in sorted(mapping.items()):
        for roi in by_slice[zs]:
            xy = np.asarray(roi.points_xy, dtype=float)
            zyx = np.column_stack([np.full(len(xy), float(zs)), xy[:, 1], xy[:, 0]])
            points_mm = zyx @ affine[:3, :3].T + affine[:3, 3] + shift
            index = target.patient_to_index(points_mm)
            rois.append(Roi(zt, [(float(x), float(y)) for x, y in index[:, [2, 1]]], kind="propagated",
                            sop_instance_uid=target.sop_instance_uids[zt]))
    placed = Lesion(reader=lesion.reader, label=lesion.label, confidence=lesion.confidence, note=lesion.note,
                    rois=rois, id=lesion.id, label_source=lesion.label_source)
    if not any(m.any() for m in slice_masks(target, placed).values()):
        raise TransferError(f"lesion {lesion.id} falls outside the images of series {target.info.describe()!r}")
    return Transfer(placed, tuple(float(v) for v in shift), alignment, mapping)  # type: ignore[arg-type]


__all__ = ["Transfer", "TransferError", "map_slices", "transfer_lesion"]
