"""The header of a file as pydicom parses it: every file the lean reader (`liverview.io.lean_header`)
leaves aside - no preamble, big endian, deflate, multi-frame functional groups, odd values - and the
reference the lean reader is tested against.
"""
from __future__ import annotations

import logging
import math
import warnings
from typing import Any, BinaryIO, cast

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag

from liverview.io.headers import (PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_PIXEL_DATA, FileHeader, FrameRef,
                                  HeaderRejected, PixelElement, describe_fields)
from liverview.io import sniff
from liverview.io.skipped import SkippedFile
from liverview.io.sniff import (NOT_DICOM_REASON, PREFIX_BYTES, BoundedReader, HeaderTooLarge, command_set_runs_on,
                                has_dicom_preamble, looks_like_dicom, prefix_looks_like_dicom)

log = logging.getLogger(__name__)


def read_dataset_header(path: str) -> FileHeader | SkippedFile:
    """Parse the header of `path` with pydicom; any failure becomes a `SkippedFile` with the reason."""
    try:
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




def describe_dataset(ds: Dataset, path: str) -> FileHeader:
    """Build the `FileHeader` of a parsed dataset; raises `HeaderRejected` with the reason."""
    return describe_fields(DatasetFields(ds), path)


def _dcmread_header(path: str) -> Dataset:
    """Parse the header of `path`, reading at most `MAX_HEADER_BYTES` whatever the file's size."""
    with sniff.open_regular_file(path) as raw:
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

    bounded = cast(BinaryIO, BoundedReader(raw))  # a binary file as far as pydicom is concerned
    return pydicom.filereader.read_partial(bounded, header_ends, defer_size=4096, force=force)


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
        if raw is not None and undefined_length:
            offset = getattr(raw, "value_tell", None)  # where the encapsulated items start
        elif raw is not None and getattr(raw, "value", b"x") is None:
            # Deferred (not yet read) data: we know exactly where it lies and how long it is.
            deferred = cast(Any, raw)  # a DataElement whose value pydicom left on disk
            offset, length = deferred.value_tell, deferred.length
        elif raw is not None and getattr(raw, "value", None) is not None:
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


def _float(ds: Dataset, keyword: str) -> float | None:
    """The (first) value of a numeric element as a finite float; None when absent or malformed."""
    try:
        value = ds.get(keyword)
        if value in (None, ""):
            return None
        if isinstance(value, pydicom.multival.MultiValue):
            value = value[0]
        result = float(value)
        return result if math.isfinite(result) else None
    except Exception:  # noqa: BLE001 - e.g. pydicom's own conversion errors on malformed IS/DS
        return None


def _int(ds: Dataset, keyword: str) -> int | None:
    value = _float(ds, keyword)
    return None if value is None else int(value)


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
