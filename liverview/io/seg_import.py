"""Read a DICOM Segmentation (SEG) and place its frames on the slices of a loaded series.

Frames are matched to slices in one of two ways, and the result says which:

``"sop-instance-uid"``
    every frame names its source image in (0008,9124) Derivation Image Sequence >
    (0008,2112) Source Image Sequence > (0008,1155) Referenced SOP Instance UID (and
    (0008,1160) Referenced Frame Number for multi-frame images), and all of them are in the series.
``"frame-of-reference+position"``
    the references do not resolve (the images were anonymised or re-exported with new UIDs, or the
    SEG names only (0008,1115) Referenced Series Sequence): the SEG must share the series'
    (0020,0052) Frame of Reference UID, orientation and pixel spacing, and each frame's
    (0020,9113) Plane Position Sequence > (0020,0032) Image Position (Patient) must fall within half
    a slice of a slice and on the series' pixel grid. A warning says so.

Anything else raises `SegImportError` with the reason. Only this module's plain data leaves the io
layer; `liverview.annotations.seg_lesions` turns it into lesions.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import iter_pixels

from liverview.io.volume import Volume

log = logging.getLogger(__name__)

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
METHOD_SOP = "sop-instance-uid"
METHOD_POSITION = "frame-of-reference+position"


class SegImportError(ValueError):
    """The SEG cannot be placed on this series; the message says why and what to check."""


class SegCode(NamedTuple):
    """(code value, coding scheme designator, code meaning) of a Code Sequence item."""

    value: str
    scheme: str
    meaning: str


@dataclass
class SegSegment:
    """One segment of the SEG placed on the series grid.

    Kept sparse, as `planes` (slice index -> bool (y, x) mask of the slices it covers), because
    SEGs from whole-body tools carry a hundred segments and a full 3-D mask each would not fit in
    memory; `mask` builds the bool (z, y, x) array on request.
    """

    number: int
    label: str
    description: str
    property_category: SegCode | None
    property_type: SegCode | None
    anatomic_regions: list[SegCode]
    algorithm_type: str
    tracking_id: str
    tracking_uid: str
    shape: tuple[int, int, int]
    planes: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def slices(self) -> list[int]:
        return sorted(z for z, plane in self.planes.items() if plane.any())

    @property
    def mask(self) -> np.ndarray:
        """bool (z, y, x) on the series grid (a new array on every call)."""
        full = np.zeros(self.shape, dtype=bool)
        for z, plane in self.planes.items():
            full[z] = plane
        return full


@dataclass
class SegImport:
    """What `import_seg` found: segments on the series grid, how frames were matched, and warnings."""

    path: str
    segments: list[SegSegment]
    method: str
    warnings: list[str] = field(default_factory=list)
    segmentation_type: str = "BINARY"
    manufacturer: str = ""
    content_creator_name: str = ""
    content_label: str = ""
    series_description: str = ""
    sop_instance_uid: str = ""
    series_uid: str = ""
    study_uid: str = ""
    frame_of_reference_uid: str = ""

    @property
    def creator(self) -> str:
        """(0070,0084) Content Creator's Name, else (0008,0070) Manufacturer, else "unknown"."""
        return self.content_creator_name or self.manufacturer or "unknown"


def is_seg_file(path: str | os.PathLike[str]) -> bool:
    """True when `path` is a DICOM file whose SOP Class is Segmentation Storage (header only)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (OSError, InvalidDicomError, ValueError, EOFError):
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS_UID


def segs_for_series(paths: Iterable[str | os.PathLike[str]], series_uid: str) -> list[Path]:
    """The DICOM SEG files among `paths` whose (0008,1115) Referenced Series Sequence names `series_uid`
    (headers only; unreadable files are passed over), in the order given."""
    found = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True,
                                 specific_tags=["SOPClassUID", "ReferencedSeriesSequence",
                                                "StudiesContainingOtherReferencedInstancesSequence"])
        except (OSError, InvalidDicomError, ValueError, EOFError):
            continue
        if str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS_UID and series_uid in _referenced_series(ds):
            found.append(Path(path))
    return found


def _code(item: Dataset | None) -> SegCode | None:
    if item is None:
        return None
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue") or ""
    return SegCode(str(value), str(item.get("CodingSchemeDesignator", "")), str(item.get("CodeMeaning", "")))


def _first(seq_owner: Dataset | None, keyword: str) -> Dataset | None:
    if seq_owner is None:
        return None
    seq = seq_owner.get(keyword)
    return seq[0] if seq else None


def _functional(ds: Dataset, per_frame: Dataset, keyword: str) -> Dataset | None:
    """A functional group item from the frame's own groups, else from the shared ones."""
    item = _first(per_frame, keyword)
    if item is None:
        item = _first(_first(ds, "SharedFunctionalGroupsSequence"), keyword)
    return item


def _frame_refs(per_frame: Dataset) -> list[tuple[str, int | None]]:
    """(Referenced SOP Instance UID, Referenced Frame Number or None) of one frame's source images."""
    refs: list[tuple[str, int | None]] = []
    for derivation in per_frame.get("DerivationImageSequence", []):
        for source in derivation.get("SourceImageSequence", []):
            uid = str(source.get("ReferencedSOPInstanceUID", ""))
            if not uid:
                continue
            numbers = source.get("ReferencedFrameNumber")
            if numbers is None or numbers == "":
                refs.append((uid, None))
            else:
                for number in numbers if isinstance(numbers, (list, pydicom.multival.MultiValue)) else [numbers]:
                    refs.append((uid, int(number)))
    return refs


def _referenced_series(ds: Dataset) -> set[str]:
    found = {str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence", [])}
    for study in ds.get("StudiesContainingOtherReferencedInstancesSequence", []):
        found |= {str(item.get("SeriesInstanceUID", "")) for item in study.get("ReferencedSeriesSequence", [])}
    return found - {""}


def _iter_frames(seg_path: str, n_frames: int, shape: tuple[int, int]):
    """The frames one at a time (uint8 0/1 for BINARY, stored values for FRACTIONAL): decoding them
    all at once would need frames x rows x columns bytes for a large SEG."""
    count = 0
    try:
        for frame in iter_pixels(seg_path):
            count += 1
            yield np.asarray(frame).reshape(shape)
    except SegImportError:
        raise
    except Exception as exc:  # pydicom raises many types for broken or unsupported pixel data
        raise SegImportError(f"{seg_path}: the SEG's pixel data cannot be decoded: {exc}") from exc
    if count != n_frames:
        raise SegImportError(f"{seg_path}: the SEG's pixel data holds {count} frame(s), not {n_frames}")


def import_seg(seg_path: str | os.PathLike[str], volume: Volume,
               uid_alias: Callable[[str], str] | None = None) -> SegImport:
    """Read the SEG at `seg_path` and return its segments as masks on the grid of `volume`.

    `uid_alias` maps a UID of `volume` to the UID a pseudonymised export of it carries (the
    installation's `Pseudonymizer.remap_uid`): a SEG that liverview exported pseudonymised from this
    very series (its Frame of Reference is the alias of the series') is placed through the aliases.

    BINARY and FRACTIONAL segmentations are read (fractional values of half the (0062,000E) Maximum
    Fractional Value or more count as inside). Raises `SegImportError` with a reason when the file
    is not a SEG or its frames cannot be placed on this series.
    """
    path = os.fspath(seg_path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, InvalidDicomError, ValueError, EOFError) as exc:
        raise SegImportError(f"{path}: not a readable DICOM file: {exc}") from exc
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class != SEG_SOP_CLASS_UID:
        raise SegImportError(f"{path}: not a DICOM SEG (SOP Class UID {sop_class or 'missing'}, "
                             f"expected {SEG_SOP_CLASS_UID} Segmentation Storage)")
    seg_type = str(ds.get("SegmentationType", "")).upper()
    if seg_type not in ("BINARY", "FRACTIONAL"):
        raise SegImportError(f"{path}: Segmentation Type {seg_type or 'missing'} is not supported "
                             f"(liverview reads BINARY and FRACTIONAL)")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []))
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if len(per_frame) != n_frames:
        raise SegImportError(f"{path}: the SEG has {n_frames} frame(s) but {len(per_frame)} Per-frame Functional "
                             f"Groups item(s); it is damaged")

    warnings: list[str] = []
    segments_ds = {int(item.SegmentNumber): item for item in ds.get("SegmentSequence", [])}
    if not segments_ds:
        raise SegImportError(f"{path}: the SEG has no Segment Sequence (0062,0002)")
    frame_segments = []
    for i, item in enumerate(per_frame):
        ident = _functional(ds, item, "SegmentIdentificationSequence")
        number = int(ident.ReferencedSegmentNumber) if ident is not None else -1
        if number not in segments_ds:
            raise SegImportError(f"{path}: frame {i + 1} names segment {number}, which the SEG does not describe")
        frame_segments.append(number)

    names, frame_of_reference = volume.sop_instance_uids, volume.frame_of_reference_uid
    seg_for = str(ds.get("FrameOfReferenceUID", ""))
    if uid_alias is not None and seg_for and seg_for != frame_of_reference and seg_for == uid_alias(frame_of_reference):
        names, frame_of_reference = [uid_alias(uid) for uid in names], seg_for
        warnings.append("the SEG is a pseudonymised export of this series; it was placed through this installation's "
                        "UID map")
    slice_of = _match_by_sop(ds, per_frame, volume, names, warnings) if (rows, cols) == volume.shape[1:] else None
    method = METHOD_SOP
    if slice_of is None:
        placements = _place_by_position(ds, per_frame, frame_segments, volume, names, frame_of_reference, warnings, path)
        method = METHOD_POSITION
    else:
        placements = [[(z, None)] for z in slice_of]

    threshold = 0.5 * float(ds.get("MaximumFractionalValue", 255) or 255) if seg_type == "FRACTIONAL" else 0.5
    planes: dict[int, dict[int, np.ndarray]] = {number: {} for number in segments_ds}
    frames = _iter_frames(path, n_frames, (rows, cols))
    for number, placed, frame in zip(frame_segments, placements, frames):
        inside = frame >= threshold
        if not inside.any():
            continue
        for z, warp in placed:
            plane = inside if warp is None else _warp(inside, warp, volume.shape[1:])
            if z in planes[number]:
                if warp is None:
                    # By position: slice numbers follow the viewer's reading order, which io does not know.
                    where = float(np.dot(volume.positions_mm[z], np.asarray(volume.normal)))
                    warnings.append(f"segment {number} has more than one frame on the slice at {where:.1f} mm; "
                                    "they were combined")
                planes[number][z] = planes[number][z] | plane
            else:
                planes[number][z] = plane
    for _ in frames:  # decode the rest too: a short pixel data element is an error, not a silent cut
        pass

    segments = []
    for number, item in sorted(segments_ds.items()):
        if not planes[number]:
            warnings.append(f"segment {number} ({item.get('SegmentLabel', '')}) is empty on this series")
        segments.append(SegSegment(
            number=number, label=str(item.get("SegmentLabel", "")), description=str(item.get("SegmentDescription", "")),
            property_category=_code(_first(item, "SegmentedPropertyCategoryCodeSequence")),
            property_type=_code(_first(item, "SegmentedPropertyTypeCodeSequence")),
            anatomic_regions=[c for c in (_code(r) for r in item.get("AnatomicRegionSequence", [])) if c],
            algorithm_type=str(item.get("SegmentAlgorithmType", "")), tracking_id=str(item.get("TrackingID", "")),
            tracking_uid=str(item.get("TrackingUID", "")), shape=volume.shape, planes=planes[number]))
    # For the log file: the callers show these themselves (the app's message, the tools' "note:" lines).
    for message in warnings:
        log.info("%s: %s", path, message)
    return SegImport(
        path=path, segments=segments, method=method, warnings=warnings, segmentation_type=seg_type,
        manufacturer=str(ds.get("Manufacturer", "") or ""),
        content_creator_name=str(ds.get("ContentCreatorName", "") or "").strip("^ "),
        content_label=str(ds.get("ContentLabel", "") or ""), series_description=str(ds.get("SeriesDescription", "") or ""),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")), series_uid=str(ds.get("SeriesInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")), frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")))


def _match_by_sop(ds: Dataset, per_frame: list[Dataset], volume: Volume, names: list[str],
                  warnings: list[str]) -> list[int] | None:
    """Slice index of every frame from its source-image references (`names`: each slice's SOP Instance
    UID as the SEG would name it), or None if any does not resolve."""
    by_uid: dict[str, list[int]] = {}
    for z, uid in enumerate(names):
        by_uid.setdefault(uid, []).append(z)
    slice_of = []
    for item in per_frame:
        candidates = set()
        for uid, frame_number in _frame_refs(item):
            for z in by_uid.get(uid, []):
                if frame_number is None or volume.frame_numbers[z] == frame_number:
                    candidates.add(z)
        if len(candidates) != 1:
            return None
        slice_of.append(candidates.pop())
    # The references decide; positions, when present, are only cross-checked.
    off = 0
    for item, z in zip(per_frame, slice_of):
        position = _position(ds, item)
        if position is not None:
            distance = abs(float(np.dot(position - volume.positions_mm[z], np.asarray(volume.normal))))
            if distance > 0.5 * volume.spacing_mm[0]:
                off += 1
    if off:
        warnings.append(f"{off} frame(s) have an Image Position (Patient) more than half a slice away from the image "
                        f"they reference; the references were used")
    return slice_of


def _position(ds: Dataset, per_frame: Dataset) -> np.ndarray | None:
    plane = _functional(ds, per_frame, "PlanePositionSequence")
    value = plane.get("ImagePositionPatient") if plane is not None else None
    if value is None or len(value) != 3:
        return None
    return np.asarray([float(v) for v in value])


def _warp(inside: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A frame's mask on the series' pixel grid: `matrix` maps frame (column, row) to series (column, row)."""
    moved = cv2.warpAffine(inside.astype(np.float32), matrix, (shape[1], shape[0]), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return moved >= 0.5


def _place_by_position(ds: Dataset, per_frame: list[Dataset], frame_segments: list[int], volume: Volume,
                       names: list[str], frame_of_reference: str, warnings: list[str],
                       path: str) -> list[list[tuple[int, np.ndarray | None]]]:
    """Where every frame goes on the series, from Frame of Reference + Image Position (Patient): the
    slices it covers, each with the in-plane map from the frame's grid to the series' grid (None when
    the grids coincide). A SEG made on another reconstruction of the same patient space (a shifted
    field of view, other pixels, thicker or thinner slices) is resampled; SegImportError otherwise."""
    known = set(names)
    n_refs = sum(1 for item in per_frame if _frame_refs(item))
    n_foreign = sum(1 for item in per_frame if _frame_refs(item) and not any(u in known for u, _ in _frame_refs(item)))
    seg_for = str(ds.get("FrameOfReferenceUID", ""))
    series = _referenced_series(ds)
    reason = (f"{n_foreign} of its {len(per_frame)} frames reference images that are not in this series"
              if n_refs else "its frames name no source images")
    if not seg_for or seg_for != frame_of_reference:
        # A pseudonymised export refers to its images by remapped UIDs: its own study's images were
        # de-identified alike, and only the installation whose key remapped them can map them back.
        where = ("It was pseudonymised, its references remapped: open it with the de-identified images "
                 "exported with it, or import it where it was exported (the same pseudonymisation key)."
                 if str(ds.get("PatientIdentityRemoved", "")).upper() == "YES" else
                 "Open the series the SEG was made on.")
        raise SegImportError(
            f"{path}: cannot place the SEG on this series: {reason}, and its Frame of Reference UID "
            f"({seg_for or 'missing'}) differs from the series' ({volume.frame_of_reference_uid or 'missing'}), so "
            f"positions cannot be compared either. {where}")
    orientation = _functional(ds, per_frame[0], "PlaneOrientationSequence")
    iop = orientation.get("ImageOrientationPatient") if orientation is not None else None
    if iop is None or len(iop) != 6:
        raise SegImportError(f"{path}: cannot place the SEG by position: it has no Image Orientation (Patient)")
    iop = np.asarray([float(v) for v in iop])
    if np.dot(iop[:3], volume.row_direction) < 0.999 or np.dot(iop[3:], volume.column_direction) < 0.999:
        raise SegImportError(f"{path}: cannot place the SEG by position: its image orientation "
                             f"{np.round(iop, 3).tolist()} differs from the series' "
                             f"{np.round(volume.row_direction + volume.column_direction, 3).tolist()}")
    measures = _functional(ds, per_frame[0], "PixelMeasuresSequence")
    spacing = measures.get("PixelSpacing") if measures is not None else None
    seg_spacing = (np.asarray([float(v) for v in spacing]) if spacing is not None and len(spacing) == 2
                   else np.asarray(volume.spacing_mm[1:], dtype=float))
    thickness = measures.get("SliceThickness") if measures is not None else None
    normal, row, col = (np.asarray(v, dtype=float) for v in (volume.normal, volume.row_direction, volume.column_direction))
    slice_coords = volume.positions_mm @ normal
    series_slab = float(volume.info.slice_thickness_mm or volume.spacing_mm[0])
    positions = []
    for i, item in enumerate(per_frame):
        position = _position(ds, item)
        if position is None:
            raise SegImportError(f"{path}: cannot place the SEG by position: frame {i + 1} has no Image Position "
                                 f"(Patient)")
        positions.append(position)
    frame_coords = np.asarray([float(p @ normal) for p in positions])
    seg_slab = float(thickness) if thickness else _frame_step(frame_coords, frame_segments) or series_slab
    placements: list[list[tuple[int, np.ndarray | None]]] = []
    resampled = 0
    for i, position in enumerate(positions):
        distances = np.abs(slice_coords - frame_coords[i])
        # Every slice whose centre lies inside the frame's slab; else the slice whose slab holds the frame.
        covered = [int(z) for z in np.nonzero(distances < 0.5 * seg_slab - 1e-6)[0]]
        if not covered and distances.min() < 0.5 * series_slab:
            covered = [int(np.argmin(distances))]
        if not covered:
            raise SegImportError(f"{path}: cannot place the SEG by position: frame {i + 1} lies "
                                 f"{distances.min():.1f} mm from the nearest slice, outside this series' volume")
        placed: list[tuple[int, np.ndarray | None]] = []
        for z in covered:
            in_plane = position - volume.positions_mm[z]
            offset = np.array([float(in_plane @ row) / volume.spacing_mm[2], float(in_plane @ col) / volume.spacing_mm[1]])
            scale = np.array([seg_spacing[1] / volume.spacing_mm[2], seg_spacing[0] / volume.spacing_mm[1]])
            if np.abs(offset).max() < 0.01 and np.allclose(scale, 1.0, atol=1e-3) and len(covered) == 1:
                placed.append((z, None))
                continue
            resampled += 1
            placed.append((z, np.array([[scale[0], 0.0, offset[0]], [0.0, scale[1], offset[1]]], dtype=np.float64)))
        placements.append(placed)
    why = (f"{reason} (anonymised or re-exported images?)" if n_refs else reason)
    if series and volume.series_uid not in series:
        why += f"; it was made on series {', '.join(sorted(series))}"
    warnings.append(f"frames matched to slices by Frame of Reference and position, not by image UID: {why}")
    if resampled:
        warnings.append(f"the SEG's grid differs from this series' (pixel spacing {seg_spacing.tolist()} mm, slabs of "
                        f"{seg_slab:g} mm): its frames were resampled by patient coordinates onto {resampled} slice(s)")
    return placements


def _frame_step(coords: np.ndarray, segments: list[int]) -> float | None:
    """The distance between neighbouring frames of one segment: the SEG's slice spacing."""
    gaps: list[float] = []
    for number in set(segments):
        values = np.unique(np.round([c for c, s in zip(coords, segments) if s == number], 3))
        gaps.extend(np.diff(values))
    gaps = [g for g in gaps if g > 1e-3]
    return float(np.median(gaps)) if gaps else None


__all__ = ["METHOD_POSITION", "METHOD_SOP", "SEG_SOP_CLASS_UID", "SegCode", "SegImport", "SegImportError",
           "SegSegment", "import_seg", "is_seg_file", "segs_for_series"]
