"""Group frames into study -> series, split mixed series, sort slices along the slice normal."""
from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from liverview.progress import Cancelled, Progress, ShouldStop
from liverview.io.headers import FileHeader, FrameRef, ImageFacts, SeriesIdentity, read_header, read_headers
from liverview.io.process_pool import chunks, map_in_order, worker_count
from liverview.io.hu import HUStatus, UnitDecision, interpret_rescale_type
from liverview.io.sources import SkippedFile, collect_files

log = logging.getLogger(__name__)


#: Gaps that differ from the median by more than this fraction are reported as uneven spacing.
SPACING_TOLERANCE = 0.1
#: Below this many files, starting the worker processes costs more than it saves (~0.15 ms a header).
MIN_FILES_FOR_WORKERS = 400
#: Files per worker task: large enough to amortise the hand-over, small enough for prompt Cancel.
HEADER_CHUNK = 64
#: How often `scan_paths` hands the series found so far to `on_partial`.
PARTIAL_EVERY_S = 0.25



@dataclass
class SeriesInfo:
    """One displayable stack of images with consistent geometry (z sorted along the slice normal)."""

    key: str
    identity: SeriesIdentity
    image: ImageFacts
    rows: int
    columns: int
    frames: list[FrameRef]
    #: Direction cosines of rows and columns, (0020,0037) Image Orientation (Patient).
    orientation: tuple[float, ...] | None
    #: (row spacing, column spacing) in mm, (0028,0030) Pixel Spacing.
    pixel_spacing_mm: tuple[float, float]
    slice_spacing_mm: float
    slice_thickness_mm: float | None
    window: tuple[float, float] | None
    warnings: list[str] = field(default_factory=list)

    @property
    def study_uid(self) -> str:
        return self.identity.study_uid

    @property
    def series_uid(self) -> str:
        return self.identity.series_uid

    @property
    def frame_of_reference_uid(self) -> str:
        return self.identity.frame_of_reference_uid

    @property
    def modality(self) -> str:
        return self.identity.modality

    @property
    def n_images(self) -> int:
        return len(self.frames)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.frames), self.rows, self.columns)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return (self.slice_spacing_mm, self.pixel_spacing_mm[0], self.pixel_spacing_mm[1])

    @property
    def is_ct(self) -> bool:
        return self.modality == "CT"

    def shares_space_with(self, other: SeriesInfo) -> bool:
        """Another CT series of the same Frame of Reference and plane: a phase of the same study that a
        lesion outlined on this series can be read on by patient coordinates."""
        return (other.key != self.key and other.is_ct and other.plane == self.plane
                and other.frame_of_reference_uid == self.frame_of_reference_uid)

    @property
    def units(self) -> UnitDecision:
        """Whether the values are Hounsfield units, and why (`liverview.io.hu`)."""
        return interpret_rescale_type(self.modality, self.image.sop_class_uid, self.image.rescale_type)

    @property
    def plane(self) -> str:
        return plane_name(self.orientation)

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(f.path for f in self.frames))

    def describe(self) -> str:
        identity = self.identity
        return identity.series_description or f"{self.modality or 'unknown'} series {identity.series_number or ''}".strip()

    def caption(self) -> str:
        """Modality and description, the modality once: descriptions often begin with it ("CT CH/AB/PEL")."""
        described = self.describe()
        if not self.modality or described.split(" ", 1)[0].upper() == self.modality.upper():
            return described
        return f"{self.modality} {described}"


@dataclass
class ScanResult:
    """Everything found under the opened paths; `skipped` lists every unusable file with its reason."""

    series: list[SeriesInfo]
    skipped: list[SkippedFile]
    n_files: int
    #: False for what `scan_paths` hands to `on_partial` while it still reads: series may still grow.
    complete: bool = True

    def find(self, key: str) -> SeriesInfo:
        for info in self.series:
            if info.key == key or info.series_uid == key:
                return info
        raise KeyError(key)


def scan_paths(paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
               progress: Progress | None = None,
               should_stop: ShouldStop | None = None,
               on_partial: Callable[[ScanResult], None] | None = None) -> ScanResult:
    """Read the headers of every file under `paths` and group them into series.

    With many files the headers are read by the worker processes (`liverview.io.process_pool`); the
    results, progress reports and skipped files come in file order either way. `on_partial(result)`
    receives the series found so far, about every `PARTIAL_EVERY_S` seconds, so that a browser can
    fill while a large folder is read.

    Raises `SourceError` when no path can be read and `Cancelled` when `should_stop()` says so.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    source = collect_files(list(paths), should_stop)
    headers: list[FileHeader] = []
    skipped = list(source.skipped)
    total = max(1, len(source.paths))
    n_files = len(source.paths) + len(source.skipped)
    last_partial = time.monotonic()
    for i, result in enumerate(_read_headers(source.paths, should_stop)):
        if isinstance(result, SkippedFile):
            skipped.append(result)
        else:
            headers.append(result)
        if progress is not None and (i % 16 == 0 or i == total - 1):
            progress((i + 1) / total, f"Reading headers {i + 1}/{total}")
        if on_partial is not None and time.monotonic() - last_partial > PARTIAL_EVERY_S and i < total - 1:
            series, _ = group_series(headers)
            on_partial(ScanResult(series=series, skipped=list(skipped), n_files=n_files, complete=False))
            last_partial = time.monotonic()
    series, left_out = group_series(headers)
    return ScanResult(series=series, skipped=skipped + left_out, n_files=n_files)


def _read_headers(paths: list[str], should_stop: ShouldStop | None) -> Iterator[FileHeader | SkippedFile]:
    """Headers in file order; `should_stop()` is checked before each file (each chunk with workers)."""
    if len(paths) >= MIN_FILES_FOR_WORKERS and worker_count() > 1:
        for chunk in map_in_order(read_headers, chunks(paths, HEADER_CHUNK), should_stop, what="scanning"):
            yield from chunk
        return
    for path in paths:
        if should_stop is not None and should_stop():
            raise Cancelled()
        yield read_header(path)


def group_series(headers: Sequence[FileHeader]) -> tuple[list[SeriesInfo], list[SkippedFile]]:
    """Study/Series Instance UID groups, split by geometry, each sorted along its slice normal.

    Returns the series and the frames left out of them (repeated slice positions), with reasons.
    """
    by_series: dict[tuple[str, str], list[FrameRef]] = defaultdict(list)
    for header in headers:
        for frame in header.frames:
            by_series[(header.identity.study_uid, header.identity.series_uid)].append(frame)
    result: list[SeriesInfo] = []
    left_out: list[SkippedFile] = []
    for (_, series_uid), frames in by_series.items():
        parts = _split_by_geometry(frames)
        for index, part in enumerate(parts):
            stacks, dropped = _split_by_time(part)
            left_out.extend(dropped)
            for stack_index, (stack, notes) in enumerate(stacks):
                suffix = "" if index == 0 and stack_index == 0 else f"#{index + 1}.{stack_index + 1}"
                info = _make_series(series_uid + suffix, stack)
                info.warnings[:0] = notes
                if index > 0:
                    info.warnings.insert(0, f"split from its series: {len(stack)} {info.plane} image(s) with a "
                                            "different orientation, size or pixel spacing than the rest")
                result.append(info)
    result.sort(key=lambda s: (s.identity.patient_name, s.identity.study_date, s.study_uid,
                               s.identity.series_number if s.identity.series_number is not None else 1 << 30,
                               -s.n_images, s.key))
    return result, left_out


def _geometry_key(frame: FrameRef) -> tuple:
    h = frame.file
    orientation = tuple(round(v, 2) for v in frame.orientation) if frame.orientation else None
    spacing = tuple(round(v, 3) for v in frame.pixel_spacing) if frame.pixel_spacing else None
    return (h.rows, h.columns, h.samples_per_pixel, orientation, spacing)


def _split_by_geometry(frames: list[FrameRef]) -> list[list[FrameRef]]:
    """A stray localizer inside an axial series ends up as its own (smaller) part."""
    groups: dict[tuple, list[FrameRef]] = defaultdict(list)
    for frame in frames:
        groups[_geometry_key(frame)].append(frame)
    return sorted(groups.values(), key=len, reverse=True)


def _split_by_time(frames: list[FrameRef]) -> tuple[list[tuple[list[FrameRef], list[str]]], list[SkippedFile]]:
    """Frames that share a position belong to different phases/echoes when a temporal key tells them
    apart; otherwise repeats are left out (keeping the first) and reported."""
    positions = [_position_key(f) for f in frames]
    if None in positions or len(set(positions)) == len(positions):
        return [(frames, [])], []
    by_time: dict[str, list[FrameRef]] = defaultdict(list)
    for frame in frames:
        by_time[frame.temporal_key].append(frame)
    if len(by_time) > 1 and all(len({_position_key(f) for f in g}) == len(g) for g in by_time.values()):
        return [(group, [f"one of {len(by_time)} phases/echoes sharing this series (key {key or 'none'})"])
                for key, group in sorted(by_time.items())], []
    kept: dict[tuple[float, ...] | None, FrameRef] = {}
    dropped: list[SkippedFile] = []
    for frame, pos in zip(frames, positions):
        if pos in kept:
            dropped.append(SkippedFile(frame.label, f"repeats the slice position of {kept[pos].path} in the "
                                                            "same series; left out"))
        else:
            kept[pos] = frame
    notes = [f"{len(dropped)} image(s) repeat a slice position already present and were left out"]
    return [(list(kept.values()), notes)], dropped


def _position_key(frame: FrameRef) -> tuple[float, ...] | None:
    return tuple(round(v, 2) for v in frame.position) if frame.position else None


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of the image plane: row direction x column direction."""
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:6], dtype=float)
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


def plane_name(orientation: Sequence[float] | None) -> str:
    if orientation is None:
        return "unknown-plane"
    normal = np.abs(slice_normal(orientation))
    axis = int(np.argmax(normal))
    if normal[axis] < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _make_series(key: str, frames: list[FrameRef]) -> SeriesInfo:
    first = frames[0].file
    warnings: list[str] = []
    orientation = frames[0].orientation
    spacing_xy = frames[0].pixel_spacing
    if spacing_xy is None or min(spacing_xy) <= 0:
        warnings.append("no usable Pixel Spacing (0028,0030): distances assume 1 mm per pixel")
        spacing_xy = (1.0, 1.0)
    ordered, slice_spacing, order_notes = _order_frames(frames, orientation, first.slice_thickness_mm)
    warnings.extend(order_notes)
    for note in dict.fromkeys(n for f in ordered for n in f.file.notes):
        warnings.append(note)
    if first.samples_per_pixel > 1 or first.photometric.startswith(("PALETTE", "RGB", "YBR")):
        warnings.append(f"colour image ({first.photometric}) shown in greyscale")
    modality = first.identity.modality
    units = interpret_rescale_type(modality, first.sop_class_uid, first.rescale_type)
    if modality and modality != "CT":
        warnings.append(f"not CT ({modality}): values are not Hounsfield units")
    elif units.status is not HUStatus.HU:
        warnings.append(units.reason)
    return SeriesInfo(
        key=key,
        identity=first.identity,
        image=first.image_facts(),
        rows=first.rows,
        columns=first.columns,
        frames=ordered,
        orientation=orientation,
        pixel_spacing_mm=(float(spacing_xy[0]), float(spacing_xy[1])),
        slice_spacing_mm=slice_spacing,
        slice_thickness_mm=first.slice_thickness_mm,
        window=first.window,
        warnings=warnings,
    )


def _order_frames(frames: list[FrameRef], orientation: Sequence[float] | None,
                  thickness: float | None) -> tuple[list[FrameRef], float, list[str]]:
    """Sort by ImagePositionPatient . normal; report uneven spacing, gaps and gantry tilt."""
    notes: list[str] = []
    fallback_spacing = thickness if thickness and thickness > 0 else 1.0
    if len(frames) == 1:
        return frames, fallback_spacing, notes
    if orientation is None or any(f.position is None for f in frames):
        ordered = sorted(frames, key=lambda f: (f.instance_number if f.instance_number is not None else 0, f.path, f.frame))
        notes.append("no slice positions (0020,0032): slices in Instance Number order, spacing "
                     f"assumed {fallback_spacing:g} mm")
        return ordered, fallback_spacing, notes
    normal = slice_normal(orientation)
    distance = {id(f): float(np.dot(np.asarray(f.position, dtype=float), normal)) for f in frames}
    ordered = sorted(frames, key=lambda f: (distance[id(f)], f.path, f.frame))
    z = np.array([distance[id(f)] for f in ordered])
    gaps = np.diff(z)
    positive = gaps[gaps > 1e-3]
    if positive.size == 0:
        notes.append("all slices share one position; spacing assumed "
                     f"{fallback_spacing:g} mm")
        return ordered, fallback_spacing, notes
    spacing = float(np.median(positive))
    deviation = np.abs(gaps - spacing) > SPACING_TOLERANCE * spacing
    if deviation.any():
        missing = int(np.sum(np.maximum(np.rint(gaps[deviation] / spacing) - 1, 0)))
        notes.append(f"uneven slice spacing: gaps from {gaps.min():.2f} to {gaps.max():.2f} mm "
                     f"(median {spacing:.2f} mm); reformats and volumes use the median")
        if missing:
            notes.append(f"about {missing} slice(s) missing (gaps of a multiple of the spacing)")
    first, last = np.asarray(ordered[0].position), np.asarray(ordered[-1].position)
    travel = last - first
    if np.linalg.norm(travel) > 0:
        cos = abs(float(np.dot(travel / np.linalg.norm(travel), normal)))
        if cos < 0.999:
            angle = float(np.degrees(np.arccos(min(1.0, cos))))
            notes.append(f"slices are sheared by {angle:.1f} degrees (gantry tilt): reformats are not "
                         "geometrically exact")
    return ordered, spacing, notes
