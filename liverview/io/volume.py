"""`Volume`: a loaded series as an int16 (z, y, x) array plus its geometry, and `load_series`."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from liverview.io.headers import FrameRef, ImageFacts, SeriesIdentity
from liverview.io.frame_slots import open_slots
from liverview.io.pixels import (DecodedFrame, FrameDecodeError, FrameReader, decode_frame, decode_frame_to_slot,
                                 needs_decoder)
from liverview.io.process_pool import map_in_order, worker_count
from liverview.io.series import ScanResult, SeriesInfo, scan_paths, slice_normal
from liverview.progress import Cancelled, Progress, ShouldStop
from liverview.io.sources import SkippedFile

log = logging.getLogger(__name__)

#: (0008,0016) of CT Image Storage: what an in-memory CT volume's images would be stored as.
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

#: Compressed series shorter than this are decoded here: starting workers would cost more.
MIN_FRAMES_FOR_WORKERS = 16

#: Called with (volume, z) after slice z has been read; the first call is the middle slice.
OnSlice = Callable[["Volume", int], None]


@dataclass
class Volume:
    """A series in memory.

    `array` is int16 (z, y, x): z follows the slice normal (increasing ImagePositionPatient . normal),
    y the image rows, x the columns. For CT the values are Hounsfield units; for other modalities they
    are the modality values after (0028,1052/1053) rescale, and `is_hu` is False.
    """

    array: np.ndarray
    spacing_mm: tuple[float, float, float]
    #: ImagePositionPatient of every slice (LPS, mm), shape (z, 3): exact even for tilted stacks.
    positions_mm: np.ndarray
    #: (0020,0037): direction of increasing column index (x) then of increasing row index (y).
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    info: SeriesInfo
    sop_instance_uids: list[str]
    #: Frame number (1-based) within its SOP instance, for multi-frame sources; 1 otherwise.
    frame_numbers: list[int]
    warnings: list[str] = field(default_factory=list)
    failed: list[SkippedFile] = field(default_factory=list)
    loaded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: What a slice that is not (yet) read holds: air (-1024 HU) for CT, 0 otherwise.
    fill_value: int = 0

    @classmethod
    def from_array(cls, array: np.ndarray, spacing_mm: Sequence[float], identity: SeriesIdentity, *,
                   origin_mm: Sequence[float] = (0.0, 0.0, 0.0),
                   row_direction: tuple[float, float, float] = (1.0, 0.0, 0.0),
                   column_direction: tuple[float, float, float] = (0.0, 1.0, 0.0),
                   image: ImageFacts | None = None, window: tuple[float, float] | None = None) -> Volume:
        """A volume that never was a file (a simulation, a resampling): `array` int16 (z, y, x) with
        `spacing_mm` (z, y, x), slice 0 at `origin_mm` (LPS) and the slices stacked along the normal.
        A CT in HU unless `image` says otherwise. Each slice gets a SOP Instance UID derived from the
        series UID, so the same volume is the same images every time; no file header is made up."""
        from pydicom.uid import generate_uid  # pydicom stays out of loading ordinary series

        nz, ny, nx = array.shape
        dz, dy, dx = (float(v) for v in spacing_mm)
        normal = np.cross(row_direction, column_direction)
        positions = np.asarray(origin_mm, dtype=float) + np.arange(nz)[:, None] * dz * normal
        sop_uids = [str(generate_uid(entropy_srcs=[identity.series_uid, "sop", str(k)])) for k in range(nz)]
        orientation = (*row_direction, *column_direction)
        frames = [FrameRef(header=None, frame=0, sop_instance_uid=sop_uids[k], position=tuple(positions[k]),
                           orientation=orientation, pixel_spacing=(dy, dx), rescale=(1.0, 0.0), instance_number=k + 1,
                           temporal_key="") for k in range(nz)]
        image = image or ImageFacts(sop_class_uid=CT_IMAGE_STORAGE if identity.modality == "CT" else "",
                                    rescale_type="HU" if identity.modality == "CT" else "", photometric="MONOCHROME2")
        info = SeriesInfo(key=identity.series_uid, identity=identity, image=image, rows=ny, columns=nx, frames=frames,
                          orientation=orientation, pixel_spacing_mm=(dy, dx), slice_spacing_mm=dz,
                          slice_thickness_mm=dz, window=window)
        return cls(array=array, spacing_mm=(dz, dy, dx), positions_mm=positions, row_direction=row_direction,
                   column_direction=column_direction, info=info, sop_instance_uids=sop_uids, frame_numbers=[1] * nz,
                   loaded=np.ones(nz, dtype=bool))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def origin_mm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.positions_mm[0])  # type: ignore[return-value]

    @property
    def normal(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in slice_normal(self.row_direction + self.column_direction))  # type: ignore[return-value]

    @property
    def study_uid(self) -> str:
        return self.info.study_uid

    @property
    def series_uid(self) -> str:
        return self.info.series_uid

    @property
    def frame_of_reference_uid(self) -> str:
        return self.info.frame_of_reference_uid

    @property
    def modality(self) -> str:
        return self.info.modality

    @property
    def is_hu(self) -> bool:
        """True for CT unless its (0028,1054) Rescale Type names another unit (`liverview.io.hu`)."""
        return self.info.units.is_hu

    @property
    def invert_display(self) -> bool:
        """MONOCHROME1: the lowest value is shown white."""
        return self.info.image.photometric == "MONOCHROME1"

    def value_range(self) -> tuple[int, int]:
        """Min and max over the slices that loaded, without copying them (a boolean index would copy
        the whole volume)."""
        if self.loaded.all() or not self.loaded.any():
            return int(self.array.min()), int(self.array.max())
        slices = [self.array[z] for z in np.flatnonzero(self.loaded)]
        return int(min(s.min() for s in slices)), int(max(s.max() for s in slices))

    def index_to_patient(self, z: float, y: float, x: float) -> np.ndarray:
        """Patient coordinates (LPS, mm) of a voxel index (fractional indices allowed)."""
        zi = int(np.clip(round(z), 0, len(self.positions_mm) - 1))
        base = self.positions_mm[zi] + (z - zi) * self.spacing_mm[0] * np.asarray(self.normal)
        return (base + x * self.spacing_mm[2] * np.asarray(self.row_direction)
                + y * self.spacing_mm[1] * np.asarray(self.column_direction))

    def patient_to_index(self, point_mm: Sequence[float] | np.ndarray) -> np.ndarray:
        """Fractional (z, y, x) index of a patient-space point, or of (N, 3) points (inverse of
        `index_to_patient` for an evenly spaced stack)."""
        points = np.asarray(point_mm, dtype=float)
        inverse = np.linalg.inv(self.affine_mm)
        return points @ inverse[:3, :3].T + inverse[:3, 3]

    @property
    def affine_mm(self) -> np.ndarray:
        """4 x 4 matrix from (z, y, x, 1) voxel indices to LPS mm, slices at the median spacing."""
        matrix = np.eye(4)
        for axis, (direction, step) in enumerate(zip((self.normal, self.column_direction, self.row_direction),
                                                     self.spacing_mm)):
            matrix[:3, axis] = np.asarray(direction, dtype=float) * step
        matrix[:3, 3] = self.positions_mm[0]
        return matrix


def allocate_volume(info: SeriesInfo) -> Volume:
    """An empty volume with the geometry of `info`, ready to be filled slice by slice by `fill_volume`
    (which sets the slices it has not read to `fill_value`, air for CT).

    The array is zeroed lazily by the operating system: allocating even a 1,000-slice volume touches no
    memory, so the middle slice is on screen before the rest of the volume is paged in."""
    orientation = info.orientation or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    positions = [f.position for f in info.frames]
    if any(p is None for p in positions):
        normal = slice_normal(orientation)
        positions = [tuple(i * info.slice_spacing_mm * normal) for i in range(info.n_images)]
    fill = -1024 if info.is_ct else 0
    return Volume(
        array=np.zeros(info.shape, dtype=np.int16),
        spacing_mm=info.spacing_mm,
        positions_mm=np.asarray(positions, dtype=float),
        row_direction=tuple(float(v) for v in orientation[:3]),  # type: ignore[arg-type]
        column_direction=tuple(float(v) for v in orientation[3:6]),  # type: ignore[arg-type]
        info=info,
        sop_instance_uids=[f.sop_instance_uid for f in info.frames],
        frame_numbers=[f.frame + 1 for f in info.frames],
        warnings=list(info.warnings),
        loaded=np.zeros(info.n_images, dtype=bool),
        fill_value=fill,
    )


def fill_volume(volume: Volume, progress: Progress | None = None, should_stop: ShouldStop | None = None,
                on_slice: OnSlice | None = None, shown: bool = False) -> Volume:
    """Read every slice of `volume.info` into `volume.array`, middle slice first; `on_slice` is told of each
    slice read. With `shown` (someone shows the volume while it loads) the others are set to
    `volume.fill_value` right after it (so that the first slice is not kept waiting for the page-in of the
    whole volume), then read.

    A slice that cannot be decoded stays at the fill value and is listed in `volume.failed`; the rest
    still load. Raises `Cancelled` when `should_stop()` becomes true.
    """
    frames = volume.info.frames
    n = len(frames)
    middle = n // 2
    order = [middle] + [i for i in range(n) if i != middle]
    reader = FrameReader()
    clipped = 0
    decoded: _WorkerFrames | None = None
    try:
        for done, z in enumerate(order):
            if should_stop is not None and should_stop():
                raise Cancelled()
            try:
                if done > 0 and decoded is not None:
                    clipped += _take_decoded(next(decoded), frames[z], volume.array[z])
                else:
                    clipped += reader.read_into(frames[z], volume.array[z])
                volume.loaded[z] = True
            except FrameDecodeError as exc:
                volume.array[z] = volume.fill_value
                volume.failed.append(SkippedFile(frames[z].label, str(exc)))
            if done == 0 and not shown:
                # Nobody waits to see this slice: the workers start before the caller hears of it.
                decoded = _decoded_by_workers(frames, order[1:], should_stop)
            if on_slice is not None and volume.loaded[z]:
                on_slice(volume, z)
            if done == 0 and shown:
                # Shown while loading: the slices not read yet must look like air, not water. With
                # nobody watching, the fill would only fault in the whole volume (about 0.1 s for
                # 100 slices in a fresh process); each slice is written as it comes.
                _fill_unread(volume)
                # The workers start after the middle slice is shown and the fill: starting them takes longer
                # than decoding a slice (the window's come from a fork server) and holds the GIL that the
                # window needs to paint the slice (measured: 0.30 -> 0.44-0.66 s to the first JPEG 2000
                # slice on screen when they started before the fill).
                decoded = _decoded_by_workers(frames, order[1:], should_stop)
            if progress is not None and (done % 8 == 0 or done == n - 1):
                progress((done + 1) / n, f"Reading images {done + 1}/{n}")
    except Cancelled:
        _fill_unread(volume)
        raise
    finally:
        if decoded is not None:
            decoded.close()
    for note in dict.fromkeys(n for f in frames for n in f.file.notes):
        if note not in volume.warnings:
            volume.warnings.append(note)
    if clipped:
        volume.warnings.append(f"{clipped} pixel value(s) outside the int16 range were clipped")
    if volume.failed:
        volume.warnings.append(f"{len(volume.failed)} of {n} image(s) could not be decoded and are shown blank")
    return volume


def _fill_unread(volume: Volume) -> None:
    if volume.fill_value:
        volume.array[~volume.loaded] = volume.fill_value


def _decoded_by_workers(frames: list[FrameRef], order: list[int],
                        should_stop: ShouldStop | None) -> _WorkerFrames | None:
    """Compressed frames in `order`, decoded by the worker processes; None when the series is read
    here (uncompressed: a plain read is faster than a hand-over; or too few frames to pay for it).

    The middle slice is always decoded here, so that it is on screen without waiting for workers.
    Results are consumed in order and at most a few frames ahead: the memory beyond the volume stays
    about 2.5 % of it, or one frame a worker."""
    workers = worker_count()
    if workers < 2 or len(order) < MIN_FRAMES_FOR_WORKERS or not all(needs_decoder(frames[z]) for z in order):
        return None
    # Two frames a worker in flight: with one, a worker that finishes early waits for the caller (measured
    # 12 % slower on 100 JPEG-LS frames).
    return _WorkerFrames(frames, order, should_stop, ahead=max(2 * workers, min(4 * workers, len(frames) // 40)))


class _WorkerFrames:
    """The workers' decoded frames, in order, started on creation; `close()` stops them and frees the ring.

    A result's values may be a view of a shared slot (`frame_slots`), valid until the next result is
    asked for: the ring has one slot more than the frames in flight, so a slot is handed out again only
    after its frame was taken."""

    def __init__(self, frames: list[FrameRef], order: list[int], should_stop: ShouldStop | None,
                 ahead: int) -> None:
        shapes = {(frames[z].file.rows, frames[z].file.columns) for z in order}
        self._slots = open_slots(ahead + 1, shapes.pop()) if len(shapes) == 1 else None
        try:
            if self._slots is None:
                self._results = map_in_order(decode_frame, (frames[z] for z in order), should_stop,
                                             ahead=ahead, what="loading")
            else:
                tasks = ((frames[z], self._slots.ref(i)) for i, z in enumerate(order))
                self._results = map_in_order(decode_frame_to_slot, tasks, should_stop, ahead=ahead,
                                             what="loading")
        except BaseException:
            if self._slots is not None:
                self._slots.close()
            raise

    def __next__(self) -> DecodedFrame:
        result = next(self._results)
        if result.slot is not None and self._slots is not None:
            result.values = self._slots.frame(result.slot)
        return result

    def close(self) -> None:
        self._results.close()
        if self._slots is not None:
            self._slots.close()


def _take_decoded(result: DecodedFrame, frame: FrameRef, out: np.ndarray) -> int:
    for note in result.notes:
        if note not in frame.file.notes:
            frame.file.notes.append(note)
    if result.values is None:
        raise FrameDecodeError(result.error or "pixel data cannot be decoded")
    out[...] = result.values
    return result.clipped


def read_slice(info: SeriesInfo, z: int) -> np.ndarray:
    """One slice of a series as int16 modality values, without loading the rest (thumbnails, quick
    value ranges). Raises `FrameDecodeError` when it cannot be decoded."""
    out = np.empty((info.rows, info.columns), dtype=np.int16)
    FrameReader().read_into(info.frames[z], out)
    return out


def load_series(source: SeriesInfo | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                series_uid: str | None = None, progress: Progress | None = None,
                should_stop: ShouldStop | None = None, on_slice: OnSlice | None = None) -> Volume:
    """Load one series as a `Volume`.

    `source` is a `SeriesInfo` from `scan_paths`, or a folder / file / zip / DICOMDIR (or a list of
    them); then `series_uid` picks the series (by Series Instance UID or scan key), and without it
    the series with the most images is loaded.

    >>> vol = load_series("path/to/ct")            # doctest: +SKIP
    >>> vol.array.shape, vol.spacing_mm, vol.is_hu  # doctest: +SKIP
    ((41, 512, 512), (5.0, 0.797, 0.797), True)
    """
    info = source if isinstance(source, SeriesInfo) else pick_series(scan_paths(source), series_uid)
    return fill_volume(allocate_volume(info), progress=progress, should_stop=should_stop, on_slice=on_slice)


def pick_series(scan: ScanResult, series_uid: str | None = None) -> SeriesInfo:
    """The requested series, or the one with the most images. Raises LookupError when there is none."""
    if series_uid is not None:
        return scan.find(series_uid)
    if not scan.series:
        reasons = "; ".join(f"{os.path.basename(s.path)}: {s.reason}" for s in scan.skipped[:5])
        raise LookupError(f"no loadable image series found ({len(scan.skipped)} file(s) skipped{': ' + reasons if reasons else ''})")
    return max(scan.series, key=lambda s: s.n_images)


__all__ = ["Volume", "allocate_volume", "fill_volume", "load_series", "pick_series", "read_slice"]
