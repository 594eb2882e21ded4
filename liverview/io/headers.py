"""Read one DICOM file's header (never its pixels) and describe the frames it holds.

Every outcome is explicit: a `FileHeader` with one `FrameRef` per frame, or a `SkippedFile` that
says in plain words why the file cannot be used. Sizes are checked here, before anything allocates.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import BinaryIO, Protocol

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag

from liverview.io.lean_header import Unusual, read_lean_fields
from liverview.io.sniff import (NOT_DICOM_REASON, PREFIX_BYTES, BoundedReader, HeaderTooLarge,
                                 command_set_runs_on, has_dicom_preamble, looks_like_dicom, prefix_looks_like_dicom)
from liverview.io.sources import SkippedFile

log = logging.getLogger(__name__)

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_PIXEL_DATA = 0x7FE00009

#: Largest single frame accepted: 16384 x 16384 (the hostile corpus files claim 65535 x 65535).
MAX_FRAME_PIXELS = 16384 * 16384
#: Largest decoded object accepted from one file (a 2000-frame 512x512 enhanced CT is 1 GiB).
MAX_DECODED_BYTES = 4 * 1024**3

# Uncompressed transfer syntaxes whose Pixel Data can be read straight from the file offset.
_NATIVE_LITTLE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_DEFLATED = "1.2.840.10008.1.2.1.99"

# Storage classes that carry no viewable image even if they have Pixel Data; the reason is shown.
_NON_IMAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "DICOM SEG segmentation, not an image (import it as annotations)",
    "1.2.840.10008.5.1.4.1.1.66.7": "label map segmentation, not an image",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set (contours), not an image",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose grid, not a diagnostic image",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT Plan, not an image",
    "1.2.840.10008.5.1.4.1.1.11.1": "presentation state, not an image",
    "1.2.840.10008.5.1.4.1.1.104.1": "encapsulated PDF document, not an image",
    "1.2.840.10008.5.1.4.1.1.104.3": "encapsulated STL 3-D model, not an image",
    "1.2.840.10008.1.3.10": "DICOMDIR index (its images are read directly)",
}


@dataclass(frozen=True)
class FrameRef:
    """One 2-D image: a single-frame file, or one frame of a multi-frame file."""

    header: FileHeader
    frame: int
    sop_instance_uid: str
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    rescale: tuple[float, float]
    instance_number: int | None
    temporal_key: str

    @property
    def path(self) -> str:
        return self.header.path

    @property
    def label(self) -> str:
        """The file, plus the frame number for multi-frame files: how the user is told which image."""
        return self.path if self.header.number_of_frames == 1 else f"{self.path} (frame {self.frame + 1})"


@dataclass(eq=False)
class FileHeader:
    """What one file says about itself. Tag numbers are given where the meaning is not obvious."""

    path: str
    transfer_syntax: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    modality: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    study_description: str
    series_description: str
    series_number: int | None
    rows: int
    columns: int
    samples_per_pixel: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    number_of_frames: int
    slice_thickness_mm: float | None
    window: tuple[float, float] | None
    #: (0028,0120) Pixel Padding Value and (0028,0121) Pixel Padding Range Limit, in stored values.
    padding: tuple[int, int] | None
    #: (0028,1054) Rescale Type as written (vendors' free text; `liverview.io.hu` interprets it).
    rescale_type: str
    has_modality_lut: bool
    #: (0018,0010) Contrast/Bolus Agent and (0018,1042) Contrast/Bolus Start Time, "" when absent.
    contrast_agent: str
    contrast_start_time: str
    #: (0008,0032) Acquisition Time, else (0008,0031) Series Time.
    acquisition_time: str
    #: Byte offset and length of native little-endian Pixel Data, for reading without a parser.
    pixel_offset: int | None
    pixel_nbytes: int | None
    frames: list[FrameRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def frame_nbytes(self) -> int:
        return self.rows * self.columns * self.samples_per_pixel * max(1, self.bits_allocated // 8)


class HeaderRejected(ValueError):
    """The file is DICOM but cannot become an image; the message is the user-facing reason."""


def read_header(path: str, lean: bool = True) -> FileHeader | SkippedFile:
    """Parse the header of `path`; any failure becomes a `SkippedFile` with the reason.

    The lean reader (`liverview.io.lean_header`) reads ordinary files; pydicom reads the rest, and
    every file with `lean=False` (the reference the lean reader is tested against).
    """
    try:
        if lean:
            try:
                return describe_fields(read_lean_fields(path), path)
            except Unusual:
                pass  # anything but the ordinary single-frame file: pydicom reads it
        with warnings.catch_warnings():
            # pydicom warns about every odd value of real-world files; the outcome is what matters here.
            warnings.simplefilter("ignore")
            ds = _dcmread_header(path)
            return describe_dataset(ds, path)
    except (HeaderRejected, HeaderTooLarge) as exc:
        return SkippedFile(path, str(exc))
    except RecursionError:
        return SkippedFile(path, "DICOM structure nested too deeply to parse safely (hostile or corrupt file)")
    except MemoryError:
        return SkippedFile(path, "header needs more memory than is plausible for DICOM (corrupt file)")
    except (InvalidDicomError, EOFError) as exc:
        return SkippedFile(path, f"not a readable DICOM file: {exc}")
    except OSError as exc:
        return SkippedFile(path, f"cannot read file: {exc.strerror or exc}")
    except Exception as exc:  # noqa: BLE001 - untrusted input: every parser failure is a reason, not a crash
        log.debug("header of %s failed", path, exc_info=True)
        return SkippedFile(path, f"corrupt DICOM header: {type(exc).__name__}: {exc}")


def _dcmread_header(path: str) -> Dataset:
    """Parse the header of `path`, reading at most `MAX_HEADER_BYTES` whatever the file's size."""
    with open(path, "rb") as raw:
        prefix = raw.read(PREFIX_BYTES)
        raw.seek(0)
        if has_dicom_preamble(prefix):
            if command_set_runs_on(prefix):
                raise InvalidDicomError("DICOM preamble followed by no data set (filler bytes, not an image)")
            try:
                return _read_until_pixels(raw, force=False)
            except InvalidDicomError:
                raw.seek(0)
        # Files without the 128-byte preamble (old CDs, raw dumps) are still common; accept them only when
        # they start with real image attributes, because force=True turns any garbage into a dataset.
        elif not prefix_looks_like_dicom(prefix):
            raise InvalidDicomError(NOT_DICOM_REASON)
        ds = _read_until_pixels(raw, force=True)
    if not looks_like_dicom(ds):
        raise InvalidDicomError(NOT_DICOM_REASON)
    return ds


def _read_until_pixels(raw: BinaryIO, force: bool) -> Dataset:
    """Top-level elements up to and including Pixel Data (values over 4 KiB deferred, not read).

    The walk stops after Pixel Data (trailing padding or signatures are not used) and at the first
    top-level tag that is not in ascending order (PS3.5 7.1): beyond that point lie bytes that are not
    a data set - zeros, a video, a second file - which a forced parse would otherwise walk to the end.
    """
    last = -1

    def header_ends(tag: BaseTag, vr: str | None, length: int) -> bool:
        nonlocal last
        if tag <= last or last >= PIXEL_DATA:
            return True
        last = tag
        return False

    return pydicom.filereader.read_partial(BoundedReader(raw), header_ends, defer_size=4096, force=force)


def describe_dataset(ds: Dataset, path: str) -> FileHeader:
    """Build the `FileHeader` of a parsed dataset; raises `HeaderRejected` with the reason."""
    return describe_fields(DatasetFields(ds), path)


class HeaderFields(Protocol):
    """The attributes `describe_fields` uses, already converted the way liverview reads them: from a
    pydicom dataset (`DatasetFields`), or straight from the bytes (`liverview.io.lean_header`)."""

    def has(self, keyword: str) -> bool: ...
    def text(self, keyword: str) -> str: ...
    def integer(self, keyword: str) -> int | None: ...
    def number(self, keyword: str) -> float | None: ...
    def numbers(self, keyword: str, n: int) -> tuple[float, ...] | None: ...
    def window(self) -> tuple[float, float] | None: ...
    def padding(self) -> tuple[int, int] | None: ...
    def temporal_key(self) -> str: ...
    def transfer_syntax(self) -> str: ...
    def pixel_element(self) -> PixelElement | None: ...
    def describe_frames(self, header: FileHeader) -> list[FrameRef]: ...


@dataclass(frozen=True)
class PixelElement:
    """Where a file's pixel data element lies: its tag, and - when its length is defined - either the
    offset of a value not read (`offset`) or the length of a value read (`nbytes`)."""

    tag: int
    undefined_length: bool
    offset: int | None
    length: int | None


def describe_fields(fields: HeaderFields, path: str) -> FileHeader:
    """Build the `FileHeader` of one file; raises `HeaderRejected` with the reason."""
    sop_class = fields.text("SOPClassUID")
    if sop_class in _NON_IMAGE_CLASSES:
        raise HeaderRejected(_NON_IMAGE_CLASSES[sop_class])
    if fields.has("DirectoryRecordSequence"):
        raise HeaderRejected(_NON_IMAGE_CLASSES["1.2.840.10008.1.3.10"])
    pixel = fields.pixel_element()
    if pixel is None:
        kind = fields.text("Modality")
        raise HeaderRejected(f"no Pixel Data (7FE0,0010): {kind + ' ' if kind else ''}object without an image")

    rows = fields.integer("Rows")
    columns = fields.integer("Columns")
    if not rows or not columns:
        raise HeaderRejected(f"image size missing or zero (Rows={rows}, Columns={columns})")
    frames = fields.integer("NumberOfFrames") or 1
    if frames < 1:
        raise HeaderRejected(f"Number of Frames (0028,0008) is {frames}")
    spp = fields.integer("SamplesPerPixel") or 1
    bits_allocated = fields.integer("BitsAllocated") or (32 if pixel.tag == FLOAT_PIXEL_DATA else 64 if pixel.tag == DOUBLE_PIXEL_DATA else 0)
    if bits_allocated not in (1, 8, 16, 32, 64):
        raise HeaderRejected(f"Bits Allocated (0028,0100) is {bits_allocated}; expected 1, 8, 16, 32 or 64")
    if rows * columns > MAX_FRAME_PIXELS:
        raise HeaderRejected(f"claims an implausible image size of {rows} x {columns} pixels "
                             f"(more than {MAX_FRAME_PIXELS:,} per frame); refused before allocating")
    expected = math.ceil(rows * columns * frames * spp * bits_allocated / 8)
    if expected > MAX_DECODED_BYTES:
        raise HeaderRejected(f"Rows x Columns x Frames x bytes = {rows} x {columns} x {frames} x "
                             f"{bits_allocated // 8 or 1} = {expected / 1024**3:.1f} GiB, more than "
                             f"{MAX_DECODED_BYTES / 1024**3:.0f} GiB; refused before allocating")

    transfer_syntax = fields.transfer_syntax()
    pixel_offset = pixel.offset if pixel.tag == PIXEL_DATA else None
    pixel_nbytes = pixel.length
    is_encapsulated = pixel.undefined_length or _is_compressed(transfer_syntax)
    if transfer_syntax == _DEFLATED:
        # Offsets and lengths refer to the inflated stream, not to the file on disk.
        pixel_offset = None
    if not is_encapsulated and pixel_nbytes is not None:
        if pixel_nbytes < expected:
            raise HeaderRejected(f"Pixel Data holds {pixel_nbytes:,} bytes but Rows x Columns x Frames x "
                                 f"Samples x BitsAllocated/8 needs {expected:,} (truncated or inconsistent file)")
        if pixel_offset is not None and os.path.getsize(path) < pixel_offset + expected:
            raise HeaderRejected(f"file is truncated: Pixel Data needs {expected:,} bytes from offset "
                                 f"{pixel_offset:,} but the file is {os.path.getsize(path):,} bytes long")
    if transfer_syntax not in _NATIVE_LITTLE or bits_allocated not in (8, 16) or spp != 1:
        pixel_offset = None

    header = FileHeader(
        path=path,
        transfer_syntax=transfer_syntax,
        sop_class_uid=sop_class,
        study_uid=fields.text("StudyInstanceUID") or "unknown-study",
        series_uid=fields.text("SeriesInstanceUID") or f"unknown-series:{os.path.dirname(path)}",
        frame_of_reference_uid=fields.text("FrameOfReferenceUID"),
        modality=fields.text("Modality").upper(),
        patient_name=fields.text("PatientName"),
        patient_id=fields.text("PatientID"),
        patient_birth_date=fields.text("PatientBirthDate"),
        patient_sex=fields.text("PatientSex"),
        study_date=fields.text("StudyDate"),
        study_time=fields.text("StudyTime"),
        study_description=fields.text("StudyDescription"),
        series_description=fields.text("SeriesDescription"),
        series_number=fields.integer("SeriesNumber"),
        rows=rows,
        columns=columns,
        samples_per_pixel=spp,
        photometric=fields.text("PhotometricInterpretation").upper() or "MONOCHROME2",
        bits_allocated=bits_allocated,
        bits_stored=fields.integer("BitsStored") or bits_allocated,
        pixel_representation=fields.integer("PixelRepresentation") or 0,
        number_of_frames=frames,
        slice_thickness_mm=fields.number("SliceThickness"),
        window=fields.window(),
        padding=fields.padding(),
        rescale_type=fields.text("RescaleType"),
        has_modality_lut=fields.has("ModalityLUTSequence"),
        contrast_agent=fields.text("ContrastBolusAgent"),
        contrast_start_time=fields.text("ContrastBolusStartTime"),
        acquisition_time=fields.text("AcquisitionTime") or fields.text("SeriesTime"),
        pixel_offset=pixel_offset,
        pixel_nbytes=pixel_nbytes,
    )
    if not fields.has("PixelRepresentation"):
        header.notes.append("Pixel Representation (0028,0103) missing; assumed unsigned")
    header.frames = fields.describe_frames(header)
    return header


@lru_cache(maxsize=64)
def _is_compressed(transfer_syntax: str) -> bool:
    return pydicom.uid.UID(transfer_syntax).is_compressed


def single_frame(header: FileHeader, sop_uid: str, position: tuple[float, ...] | None,
                 orientation: tuple[float, ...] | None, pixel_spacing: tuple[float, ...] | None,
                 rescale: tuple[float, float], instance: int | None, temporal: str) -> list[FrameRef]:
    """The one `FrameRef` of a single-frame file without functional groups."""
    return [FrameRef(header=header, frame=0, sop_instance_uid=sop_uid or f"no-sop-uid:{header.path}",
                     position=position, orientation=orientation, pixel_spacing=pixel_spacing, rescale=rescale,
                     instance_number=instance, temporal_key=temporal)]


class DatasetFields:
    """`HeaderFields` of a dataset parsed by pydicom: every file the lean reader leaves to pydicom."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def has(self, keyword: str) -> bool:
        return keyword in self.ds

    def text(self, keyword: str) -> str:
        return _str(self.ds, keyword)

    def integer(self, keyword: str) -> int | None:
        return _int(self.ds, keyword)

    def number(self, keyword: str) -> float | None:
        return _float(self.ds, keyword)

    def numbers(self, keyword: str, n: int) -> tuple[float, ...] | None:
        return _floats(self.ds, keyword, n)

    def window(self) -> tuple[float, float] | None:
        return _window(self.ds)

    def padding(self) -> tuple[int, int] | None:
        return _padding(self.ds)

    def temporal_key(self) -> str:
        ds = self.ds
        return "/".join(str(v) for v in (ds.get("AcquisitionNumber"), ds.get("TemporalPositionIdentifier"),
                                          ds.get("EchoNumbers"), ds.get("TriggerTime")) if v not in (None, ""))

    def transfer_syntax(self) -> str:
        ds = self.ds
        transfer_syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        if not transfer_syntax:
            transfer_syntax = "1.2.840.10008.1.2" if ds.is_implicit_VR else "1.2.840.10008.1.2.1" if ds.is_little_endian else "1.2.840.10008.1.2.2"
        return transfer_syntax

    def pixel_element(self) -> PixelElement | None:
        pixel_tag = next((t for t in (PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_PIXEL_DATA) if t in self.ds), None)
        if pixel_tag is None:
            return None
        raw = self.ds.get_item(pixel_tag, keep_deferred=True)
        undefined_length = getattr(raw, "length", 0) == 0xFFFFFFFF
        offset = length = None
        if raw is not None and not undefined_length and getattr(raw, "value", b"x") is None:
            # Deferred (not yet read) data: we know exactly where it lies and how long it is.
            offset, length = raw.value_tell, raw.length
        elif raw is not None and not undefined_length and getattr(raw, "value", None) is not None:
            length = len(raw.value)
        return PixelElement(pixel_tag, undefined_length, offset, length)

    def describe_frames(self, header: FileHeader) -> list[FrameRef]:
        return _describe_frames(self.ds, header)


def _describe_frames(ds: Dataset, header: FileHeader) -> list[FrameRef]:
    sop_uid = _str(ds, "SOPInstanceUID") or f"no-sop-uid:{header.path}"
    base_rescale = (_float(ds, "RescaleSlope") or 1.0, _float(ds, "RescaleIntercept") or 0.0)
    instance = _int(ds, "InstanceNumber")
    temporal = DatasetFields(ds).temporal_key()
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") if header.number_of_frames > 1 or "PerFrameFunctionalGroupsSequence" in ds else None
    position = _floats(ds, "ImagePositionPatient", 3)
    orientation = _floats(ds, "ImageOrientationPatient", 6)
    spacing = _floats(ds, "PixelSpacing", 2) or _floats(ds, "ImagerPixelSpacing", 2)
    shared_orientation = _group_value(shared, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
    shared_spacing = _group_value(shared, "PixelMeasuresSequence", "PixelSpacing", 2)
    shared_rescale = _rescale(shared)
    if header.slice_thickness_mm is None:
        header.slice_thickness_mm = _group_scalar(shared, "PixelMeasuresSequence", "SliceThickness")

    frames: list[FrameRef] = []
    for index in range(header.number_of_frames):
        item = per_frame[index] if per_frame is not None and index < len(per_frame) else None
        frame_position = _group_value(item, "PlanePositionSequence", "ImagePositionPatient", 3)
        if frame_position is None and header.number_of_frames == 1:
            frame_position = position
        frames.append(FrameRef(
            header=header,
            frame=index,
            sop_instance_uid=sop_uid,
            position=frame_position,
            orientation=_group_value(item, "PlaneOrientationSequence", "ImageOrientationPatient", 6) or shared_orientation or orientation,
            pixel_spacing=_group_value(item, "PixelMeasuresSequence", "PixelSpacing", 2) or shared_spacing or spacing,
            rescale=_rescale(item) or shared_rescale or base_rescale,
            instance_number=instance if header.number_of_frames == 1 else index + 1,
            temporal_key=temporal if header.number_of_frames == 1 else _frame_temporal_key(item),
        ))
    return frames


def _frame_temporal_key(item: Dataset | None) -> str:
    """Multiphase enhanced MR/CT: (0020,9128) Temporal Position Index in the Frame Content Sequence."""
    content = _first_item(item, "FrameContentSequence")
    if content is None:
        return ""
    return str(content.get("TemporalPositionIndex", "") or "")


def _first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    if ds is None:
        return None
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _group_value(item: Dataset | None, sequence: str, keyword: str, n: int) -> tuple[float, ...] | None:
    inner = _first_item(item, sequence)
    return _floats(inner, keyword, n) if inner is not None else None


def _group_scalar(item: Dataset | None, sequence: str, keyword: str) -> float | None:
    inner = _first_item(item, sequence)
    return _float(inner, keyword) if inner is not None else None


def _rescale(item: Dataset | None) -> tuple[float, float] | None:
    inner = _first_item(item, "PixelValueTransformationSequence")
    if inner is None or "RescaleSlope" not in inner:
        return None
    return (_float(inner, "RescaleSlope") or 1.0, _float(inner, "RescaleIntercept") or 0.0)


def _window(ds: Dataset) -> tuple[float, float] | None:
    """(0028,1050) Window Center and (0028,1051) Window Width; the first pair when several are given."""
    try:
        center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if center is None or width is None:
            return None
        center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (center, width) if width > 0 and math.isfinite(center) else None


def _padding(ds: Dataset) -> tuple[int, int] | None:
    try:
        value = ds.get("PixelPaddingValue")
        if value is None:
            return None
        limit = ds.get("PixelPaddingRangeLimit", value)
        low, high = sorted((int(value), int(limit)))
        return low, high
    except (TypeError, ValueError):
        return None


def _str(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a bad charset or VR must not lose the whole file
        return ""
    if value is None:
        return ""
    try:
        return str(value).strip().replace("\x00", "")
    except Exception:  # noqa: BLE001
        return ""


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        if value in (None, ""):
            return None
        if isinstance(value, pydicom.multival.MultiValue):
            value = value[0]
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return None
    except Exception:  # noqa: BLE001 - e.g. pydicom's own conversion errors on malformed IS
        return None


def _float(ds: Dataset, keyword: str) -> float | None:
    try:
        value = ds.get(keyword)
        if value in (None, ""):
            return None
        if isinstance(value, pydicom.multival.MultiValue):
            value = value[0]
        result = float(value)
        return result if math.isfinite(result) else None
    except Exception:  # noqa: BLE001
        return None


def _floats(ds: Dataset | None, keyword: str, n: int) -> tuple[float, ...] | None:
    if ds is None:
        return None
    try:
        value = ds.get(keyword)
        if value is None:
            return None
        numbers = tuple(float(v) for v in value)
    except Exception:  # noqa: BLE001
        return None
    if len(numbers) != n or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers
