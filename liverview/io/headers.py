"""Read one DICOM file's header (never its pixels) and describe the frames it holds.

Every outcome is explicit: a `FileHeader` with one `FrameRef` per frame, or a `SkippedFile` that
says in plain words why the file cannot be used. Sizes are checked here, before anything allocates.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from liverview.io.lean_header import read_lean_fields
from liverview.io.sniff import NotARegularFile
from liverview.io.transfer_syntax import DEFLATED, DIRECT_DECODING, NATIVE_LITTLE, is_compressed
from liverview.io.skipped import SkippedFile

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_PIXEL_DATA = 0x7FE00009

#: Largest single frame accepted: 16384 x 16384 (the hostile corpus files claim 65535 x 65535).
MAX_FRAME_PIXELS = 16384 * 16384
#: Largest decoded object accepted from one file (a 2000-frame 512x512 enhanced CT is 1 GiB).
MAX_DECODED_BYTES = 4 * 1024**3

# Uncompressed transfer syntaxes whose Pixel Data can be read straight from the file offset.

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

    #: The file the image comes from; None for an image that only ever lived in memory
    #: (`Volume.from_array`).
    header: FileHeader | None
    frame: int
    sop_instance_uid: str
    #: (0020,0032), (0020,0037) and (0028,0030) as the file gives them (3, 6 and 2 values).
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    rescale: tuple[float, float]
    instance_number: int | None
    temporal_key: str

    @property
    def file(self) -> FileHeader:
        """The header of the file to read this image from; an image that lives in memory has none."""
        if self.header is None:
            raise ValueError(f"image {self.sop_instance_uid} lives in memory only: there is no file to read")
        return self.header

    @property
    def path(self) -> str:
        return self.header.path if self.header is not None else ""

    @property
    def label(self) -> str:
        """The file, plus the frame number for multi-frame files: how the user is told which image."""
        if self.header is None:
            return f"image {self.frame + 1} (in memory)"
        return self.path if self.header.number_of_frames == 1 else f"{self.path} (frame {self.frame + 1})"


@dataclass(frozen=True)
class SeriesIdentity:
    """Who and what a series is — patient, study, series, frame of reference — as every file of it
    says, and as the series (`SeriesInfo`) and exports carry it on."""

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


@dataclass(frozen=True)
class ImageFacts:
    """What a series' first image says about all of them that is not geometry: how its values are to
    be read and when it was acquired relative to the contrast bolus."""

    sop_class_uid: str
    #: (0028,1054) Rescale Type as written (vendors' free text; `liverview.io.hu` interprets it).
    rescale_type: str
    photometric: str
    #: (0018,0010) Contrast/Bolus Agent and (0018,1042) Contrast/Bolus Start Time, "" when absent.
    contrast_agent: str = ""
    contrast_start_time: str = ""
    #: (0008,0032) Acquisition Time, else (0008,0031) Series Time.
    acquisition_time: str = ""


@dataclass(eq=False)
class FileHeader:
    """What one file says about itself. Tag numbers are given where the meaning is not obvious."""

    path: str
    transfer_syntax: str
    sop_class_uid: str
    identity: SeriesIdentity
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
    #: Byte offset of the items of single-frame JPEG-LS or JPEG 2000 Pixel Data, for decoding without a parser.
    fragments_offset: int | None = None
    frames: list[FrameRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def image_facts(self) -> ImageFacts:
        return ImageFacts(self.sop_class_uid, self.rescale_type, self.photometric, self.contrast_agent,
                          self.contrast_start_time, self.acquisition_time)

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
    if lean:
        try:
            return describe_fields(read_lean_fields(path), path)
        except HeaderRejected as exc:
            return SkippedFile(path, str(exc))
        except NotARegularFile as exc:
            return SkippedFile(path, str(exc))
        except OSError as exc:
            return SkippedFile(path, f"cannot read file: {exc.strerror or exc}")
        except Exception:  # noqa: BLE001 - Unusual, or anything unforeseen: pydicom decides, as it always did
            pass
    # Imported here: pydicom takes a tenth of a second to import, and ordinary files never need it.
    from liverview.io.dataset_header import read_dataset_header
    return read_dataset_header(path)


def read_headers(paths: list[str]) -> list[FileHeader | SkippedFile]:
    """`read_header` of each path, in order (one task of the worker processes)."""
    return [read_header(path) for path in paths]


class HeaderFields(Protocol):
    """The attributes `describe_fields` uses, already converted the way liverview reads them: from a
    pydicom dataset (`liverview.io.dataset_header`), or straight from the bytes (`liverview.io.lean_header`)."""

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
    offset of a value not read (`offset`) or the length of a value read (`nbytes`); for encapsulated
    data of undefined length, `offset` is where its items start (when the reader knows it)."""

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
        rows, columns = fields.integer("Rows"), fields.integer("Columns")
        if rows and columns:
            # An image's description without its pixels: what a copy or a download cut short leaves.
            raise HeaderRejected(f"no Pixel Data (7FE0,0010) after the description of a {rows}×{columns} "
                                 f"{kind + ' ' if kind else ''}image: the file is probably cut short (damaged)")
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
    pixel_offset = pixel.offset if pixel.tag == PIXEL_DATA and not pixel.undefined_length else None
    pixel_nbytes = pixel.length
    is_encapsulated = pixel.undefined_length or is_compressed(transfer_syntax)
    if transfer_syntax == DEFLATED:
        # Offsets and lengths refer to the inflated stream, not to the file on disk.
        pixel_offset = None
    if not is_encapsulated and pixel_nbytes is not None:
        if pixel_nbytes < expected:
            raise HeaderRejected(f"Pixel Data holds {pixel_nbytes:,} bytes but Rows x Columns x Frames x "
                                 f"Samples x BitsAllocated/8 needs {expected:,} (truncated or inconsistent file)")
        if pixel_offset is not None and os.path.getsize(path) < pixel_offset + expected:
            raise HeaderRejected(f"file is truncated: Pixel Data needs {expected:,} bytes from offset "
                                 f"{pixel_offset:,} but the file is {os.path.getsize(path):,} bytes long")
    if transfer_syntax not in NATIVE_LITTLE or bits_allocated not in (8, 16) or spp != 1:
        pixel_offset = None

    header = FileHeader(
        path=path,
        transfer_syntax=transfer_syntax,
        sop_class_uid=sop_class,
        identity=SeriesIdentity(
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
        ),
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
        fragments_offset=(pixel.offset if pixel.tag == PIXEL_DATA and pixel.undefined_length and frames == 1
                          and transfer_syntax in DIRECT_DECODING and spp == 1 and bits_allocated in (8, 16) else None),
    )
    if not fields.has("PixelRepresentation"):
        header.notes.append("Pixel Representation (0028,0103) missing; assumed unsigned")
    header.frames = fields.describe_frames(header)
    return header


@lru_cache(maxsize=64)
def single_frame(header: FileHeader, sop_uid: str, position: tuple[float, ...] | None,
                 orientation: tuple[float, ...] | None, pixel_spacing: tuple[float, ...] | None,
                 rescale: tuple[float, float], instance: int | None, temporal: str) -> list[FrameRef]:
    """The one `FrameRef` of a single-frame file without functional groups."""
    return [FrameRef(header=header, frame=0, sop_instance_uid=sop_uid or f"no-sop-uid:{header.path}",
                     position=position, orientation=orientation, pixel_spacing=pixel_spacing, rescale=rescale,
                     instance_number=instance, temporal_key=temporal)]
