"""A lean reader for the fixed set of header attributes liverview uses, straight from the file's bytes.

pydicom builds a full `Dataset` (every element, then ``Dataset.get`` per attribute): about 1.2 ms per
file, which is most of the time of indexing a CD of thousands of images. The ordinary single-frame
image - preamble, little-endian explicit or implicit VR, a plain character set, clean values - is read
here in a fraction of that. Anything else raises `Unusual` and the caller parses the file with pydicom,
so the two paths give identical `FileHeader`s (checked on the whole shared corpus and the real series).
"""
from __future__ import annotations

import math
import os
import re
import struct
from typing import TYPE_CHECKING

from liverview.io import sniff
from liverview.io.sniff import PREFIX_BYTES
from liverview.io.transfer_syntax import EXPLICIT_LITTLE, IMPLICIT_LITTLE, is_encapsulated_explicit_little

if TYPE_CHECKING:
    from liverview.io.headers import FileHeader, FrameRef, PixelElement


#: Values pydicom would read rather than defer (``defer_size=4096``): the caller then derives the
#: pixel data length from the value read; rare (tiny images), so left to pydicom.
_DEFER_SIZE = 4096

# (group, element) -> (keyword, VR used when the file is implicit VR).
_WANTED: dict[int, tuple[str, str]] = {
    0x00080005: ("SpecificCharacterSet", "CS"),
    0x00080016: ("SOPClassUID", "UI"),
    0x00080018: ("SOPInstanceUID", "UI"),
    0x00080020: ("StudyDate", "DA"),
    0x00080030: ("StudyTime", "TM"),
    0x00080031: ("SeriesTime", "TM"),
    0x00080032: ("AcquisitionTime", "TM"),
    0x00080060: ("Modality", "CS"),
    0x00081030: ("StudyDescription", "LO"),
    0x0008103E: ("SeriesDescription", "LO"),
    0x00100010: ("PatientName", "PN"),
    0x00100020: ("PatientID", "LO"),
    0x00100030: ("PatientBirthDate", "DA"),
    0x00100040: ("PatientSex", "CS"),
    0x00180010: ("ContrastBolusAgent", "LO"),
    0x00180050: ("SliceThickness", "DS"),
    0x00180086: ("EchoNumbers", "IS"),
    0x00181042: ("ContrastBolusStartTime", "TM"),
    0x00181060: ("TriggerTime", "DS"),
    0x00181164: ("ImagerPixelSpacing", "DS"),
    0x0020000D: ("StudyInstanceUID", "UI"),
    0x0020000E: ("SeriesInstanceUID", "UI"),
    0x00200011: ("SeriesNumber", "IS"),
    0x00200012: ("AcquisitionNumber", "IS"),
    0x00200013: ("InstanceNumber", "IS"),
    0x00200032: ("ImagePositionPatient", "DS"),
    0x00200037: ("ImageOrientationPatient", "DS"),
    0x00200052: ("FrameOfReferenceUID", "UI"),
    0x00200100: ("TemporalPositionIdentifier", "IS"),
    0x00280002: ("SamplesPerPixel", "US"),
    0x00280004: ("PhotometricInterpretation", "CS"),
    0x00280008: ("NumberOfFrames", "IS"),
    0x00280010: ("Rows", "US"),
    0x00280011: ("Columns", "US"),
    0x00280030: ("PixelSpacing", "DS"),
    0x00280100: ("BitsAllocated", "US"),
    0x00280101: ("BitsStored", "US"),
    0x00280103: ("PixelRepresentation", "US"),
    0x00281050: ("WindowCenter", "DS"),
    0x00281051: ("WindowWidth", "DS"),
    0x00281052: ("RescaleIntercept", "DS"),
    0x00281053: ("RescaleSlope", "DS"),
    0x00281054: ("RescaleType", "LO"),
}
# Attributes whose presence matters (read by pydicom when present: they change the header's shape).
_PRESENCE = {0x00283000: "ModalityLUTSequence", 0x00041220: "DirectoryRecordSequence"}
# Present -> pydicom reads the file: multi-frame functional groups, float pixels, padding whose VR an
# implicit-VR file leaves to the pixel representation.
_NEEDS_PYDICOM = {0x52009229, 0x52009230, 0x7FE00008, 0x7FE00009}
_PADDING = {0x00280120: "PixelPaddingValue", 0x00280121: "PixelPaddingRangeLimit"}
PIXEL_DATA = 0x7FE00010

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_TEXT_VRS = {"SH", "LO", "ST", "LT", "PN", "UC", "UT"}
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_IS = re.compile(r"[ ]*[+-]?[0-9]+[ ]*")
_DS = re.compile(r"[ ]*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?[ ]*")
_TAG_VR = struct.Struct("<HH2s")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TAG_LENGTH = struct.Struct("<HHI")


class Unusual(Exception):
    """The file needs pydicom: no preamble, big endian, deflate, multi-frame, an odd value or charset."""


class LeanFields:
    """`HeaderFields` read from the raw bytes of an ordinary single-frame file (see the module doc)."""

    def __init__(self, transfer_syntax: str, values: dict[str, tuple[str, bytes]], present: set[str],
                 pixel: PixelElement | None, implicit: bool) -> None:
        self._transfer_syntax = transfer_syntax
        self._values = values
        self._present = present
        self._pixel = pixel
        charset = self._raw_text("SpecificCharacterSet", "CS") if "SpecificCharacterSet" in values else ""
        if charset not in _CHARSETS:
            raise Unusual(f"character set {charset!r}")
        self._encoding = _CHARSETS[charset]
        if implicit and ("PixelPaddingValue" in values or "PixelPaddingRangeLimit" in values):
            raise Unusual("implicit VR pixel padding")

    def has(self, keyword: str) -> bool:
        return keyword in self._values or keyword in self._present

    def text(self, keyword: str) -> str:
        if keyword not in self._values:
            return ""
        value = self._raw_text(keyword)
        if "\\" in value:
            raise Unusual(f"{keyword} has several values")
        return value.strip().replace("\x00", "")

    def integer(self, keyword: str) -> int | None:
        if keyword not in self._values:
            return None
        vr, raw = self._values[keyword]
        if vr in ("US", "SS"):
            if len(raw) != 2:
                raise Unusual(f"{keyword} is {len(raw)} bytes long")
            return struct.unpack("<h" if vr == "SS" else "<H", raw)[0]
        if vr != "IS":
            raise Unusual(f"{keyword} has VR {vr}")
        values = self._strings(keyword)
        if not values:
            return None
        if not _IS.fullmatch(values[0]) or not all(_IS.fullmatch(v) for v in values):
            raise Unusual(f"{keyword} is not a plain integer string")
        return int(values[0])

    def number(self, keyword: str) -> float | None:
        values = self._decimals(keyword)
        if not values:
            return None
        return values[0] if math.isfinite(values[0]) else None

    def numbers(self, keyword: str, n: int) -> tuple[float, ...] | None:
        values = self._decimals(keyword)
        if values is None or len(values) < 2:
            # pydicom gives a single value as a number, which liverview does not iterate (None).
            return None
        return tuple(values) if len(values) == n and all(math.isfinite(v) for v in values) else None

    def window(self) -> tuple[float, float] | None:
        center, width = self._decimals("WindowCenter"), self._decimals("WindowWidth")
        if not center or not width:
            return None
        return (center[0], width[0]) if width[0] > 0 and math.isfinite(center[0]) else None

    def padding(self) -> tuple[int, int] | None:
        value = self._binary_integer("PixelPaddingValue")
        if value is None:
            return None
        limit = self._binary_integer("PixelPaddingRangeLimit")
        low, high = sorted((value, value if limit is None else limit))
        return low, high

    def temporal_key(self) -> str:
        parts = []
        for keyword in ("AcquisitionNumber", "TemporalPositionIdentifier", "EchoNumbers", "TriggerTime"):
            if keyword not in self._values:
                continue
            vr, _ = self._values[keyword]
            values = self._strings(keyword)
            if len(values) > 1 or vr not in ("IS", "DS"):
                raise Unusual(f"{keyword} as a temporal key")
            if values and not (_IS if vr == "IS" else _DS).fullmatch(values[0]):
                raise Unusual(f"{keyword} is not a plain number")
            if values and values[0].strip():
                parts.append(values[0].strip())
        return "/".join(parts)

    def transfer_syntax(self) -> str:
        return self._transfer_syntax

    def pixel_element(self) -> PixelElement | None:
        return self._pixel

    def describe_frames(self, header: FileHeader) -> list[FrameRef]:
        from liverview.io.headers import single_frame
        if header.number_of_frames != 1:
            raise Unusual("multi-frame")
        rescale = (self.number("RescaleSlope") or 1.0, self.number("RescaleIntercept") or 0.0)
        return single_frame(header, self.text("SOPInstanceUID"), self.numbers("ImagePositionPatient", 3),
                            self.numbers("ImageOrientationPatient", 6),
                            self.numbers("PixelSpacing", 2) or self.numbers("ImagerPixelSpacing", 2),
                            rescale, self.integer("InstanceNumber"), self.temporal_key())

    # -- conversions ------------------------------------------------------------------------------------
    def _raw_text(self, keyword: str, expected_vr: str | None = None) -> str:
        vr, raw = self._values[keyword]
        if expected_vr is not None and vr != expected_vr:
            raise Unusual(f"{keyword} has VR {vr}")
        if vr in _TEXT_VRS:
            try:
                text = raw.decode(self._encoding)
            except UnicodeDecodeError as exc:
                raise Unusual(f"{keyword} does not decode") from exc
        elif vr in ("CS", "DA", "TM", "UI", "IS", "DS", "AS", "DT"):
            if not raw.isascii():
                raise Unusual(f"{keyword} is not ASCII")
            text = raw.decode("ascii")
        else:
            raise Unusual(f"{keyword} has VR {vr}")
        if vr != "UI" and text.endswith("\x00"):
            raise Unusual(f"{keyword} padded with NUL")  # pydicom's stripping differs per VR
        if vr == "CS":
            text = text.strip()
        return text

    def _strings(self, keyword: str) -> list[str]:
        text = self._raw_text(keyword).rstrip(" ")
        return text.split("\\") if text else []

    def _decimals(self, keyword: str) -> list[float] | None:
        if keyword not in self._values:
            return None
        vr, _ = self._values[keyword]
        if vr != "DS":
            raise Unusual(f"{keyword} has VR {vr}")
        values = self._strings(keyword)
        if not all(_DS.fullmatch(v) for v in values):
            raise Unusual(f"{keyword} is not a plain decimal string")
        return [float(v) for v in values]

    def _binary_integer(self, keyword: str) -> int | None:
        if keyword not in self._values:
            return None
        vr, raw = self._values[keyword]
        if vr not in ("US", "SS") or len(raw) != 2:
            raise Unusual(f"{keyword} has VR {vr} and {len(raw)} bytes")
        return struct.unpack("<h" if vr == "SS" else "<H", raw)[0]


def read_lean_fields(path: str) -> LeanFields:
    """The `LeanFields` of `path`; raises `Unusual` when pydicom must read it, OSError when it cannot be read."""
    from liverview.io.headers import PixelElement

    with sniff.open_regular_file(path) as fh:
        cursor = _Cursor(fh)
        data = cursor.data
        if data[128:132] != b"DICM":
            raise Unusual("no preamble")
        transfer_syntax, cursor.pos = _read_meta(data)
        if transfer_syntax == IMPLICIT_LITTLE:
            implicit = True
            vr_bytes = data[cursor.pos + 4:cursor.pos + 6]
            if vr_bytes.isalpha() and vr_bytes.isupper():
                raise Unusual("implicit VR declared, explicit VR written")
        elif transfer_syntax == EXPLICIT_LITTLE or is_encapsulated_explicit_little(transfer_syntax):
            implicit = False
        else:
            raise Unusual(f"transfer syntax {transfer_syntax}")
        values: dict[str, tuple[str, bytes]] = {}
        present: set[str] = set()
        pixel = None
        last = -1
        while cursor.need(12):
            data, pos = cursor.data, cursor.pos
            group, element, vr_bytes = _TAG_VR.unpack_from(data, pos)
            tag = group << 16 | element
            if tag <= last:
                raise Unusual("tags out of order")
            last = tag
            if implicit:
                length, vr, header_length = _U32.unpack_from(data, pos + 4)[0], _WANTED.get(tag, ("", ""))[1], 8
            elif vr_bytes in _LONG_VRS:
                length, vr, header_length = _U32.unpack_from(data, pos + 8)[0], vr_bytes.decode(), 12
            else:
                if not (vr_bytes.isalpha() and vr_bytes.isupper()):
                    raise Unusual("not a VR")
                length, vr, header_length = _U16.unpack_from(data, pos + 6)[0], vr_bytes.decode(), 8
            cursor.pos += header_length
            if tag == PIXEL_DATA:
                if length == _UNDEFINED:
                    pixel = PixelElement(PIXEL_DATA, True, cursor.offset, None)
                elif length <= _DEFER_SIZE:
                    raise Unusual("small pixel data")
                else:
                    pixel = PixelElement(PIXEL_DATA, False, cursor.offset, length)
                break
            if tag in _NEEDS_PYDICOM:
                raise Unusual(f"tag {tag:08X}")
            if tag in _PRESENCE:
                present.add(_PRESENCE[tag])
            if length == _UNDEFINED:
                if tag in _WANTED or tag in _PADDING:
                    raise Unusual("undefined length value")
                _skip_undefined(cursor, implicit or vr == "UN")
            elif tag in _WANTED or tag in _PADDING:
                if not cursor.need(length):
                    raise Unusual("value beyond the end of the file")
                keyword = _WANTED[tag][0] if tag in _WANTED else _PADDING[tag]
                values[keyword] = (vr, cursor.data[cursor.pos:cursor.pos + length])
                cursor.pos += length
            else:
                cursor.skip(length)
        if pixel is None and cursor.pos != len(cursor.data):
            raise Unusual("file ends inside an element")
    return LeanFields(transfer_syntax, values, present, pixel, implicit)


class _Cursor:
    """A position in a file read forward in blocks; `offset` is the position in the file."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.size = os.fstat(fh.fileno()).st_size
        self.data = fh.read(PREFIX_BYTES)
        self.pos = 0
        self.base = 0  # file offset of data[0]

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def need(self, n: int) -> bool:
        """Make `n` bytes from `pos` available in `data`; False at the end of the file."""
        if len(self.data) - self.pos >= n:
            return True
        if self.base + self.pos > sniff.MAX_HEADER_BYTES:
            raise Unusual("header larger than the cap")  # pydicom then reports it in its words
        rest = self.data[self.pos:]
        self.base += self.pos
        self.data = rest + self.fh.read(max(PREFIX_BYTES, n - len(rest)))
        self.pos = 0
        return len(self.data) >= n

    def skip(self, length: int) -> None:
        end = self.pos + length
        if end <= len(self.data):
            self.pos = end
            return
        if self.base + end > self.size:
            raise Unusual("value beyond the end of the file")
        self.fh.seek(self.base + end)
        self.base, self.data, self.pos = self.base + end, b"", 0


def _read_meta(data: bytes) -> tuple[str, int]:
    """(0002,0010) Transfer Syntax UID and where the data set starts."""
    texts, pos = _read_meta_texts(data)
    if not texts.get(0x0010):
        raise Unusual("no transfer syntax")
    return texts[0x0010], pos


def _read_meta_texts(data: bytes) -> tuple[dict[int, str], int]:
    """The file meta's (0002,0002) Media Storage SOP Class and (0002,0010) Transfer Syntax UIDs, by element,
    and where the data set starts; the meta is explicit VR LE."""
    pos = 132
    texts: dict[int, str] = {}
    while len(data) >= pos + 8:
        group, element, vr = _TAG_VR.unpack_from(data, pos)
        if group != 0x0002:
            break
        if vr in _LONG_VRS:
            length, header_length = _U32.unpack_from(data, pos + 8)[0], 12
        else:
            length, header_length = _U16.unpack_from(data, pos + 6)[0], 8
        if length == _UNDEFINED or pos + header_length + length > len(data):
            raise Unusual("file meta")
        if element in (0x0002, 0x0010):
            raw = data[pos + header_length:pos + header_length + length]
            if not raw.isascii():
                raise Unusual("file meta UID not ASCII")
            texts[element] = raw.decode("ascii").rstrip("\x00 ")
        pos += header_length + length
    return texts, pos


def read_media_storage_class(path: str) -> str:
    """(0002,0002) Media Storage SOP Class UID of a DICOM file, "" for a file without the DICOM preamble
    or without it; raises `Unusual` when pydicom must read the file meta, OSError when it cannot be read."""
    with sniff.open_regular_file(path) as fh:
        data = fh.read(PREFIX_BYTES)
    if data[128:132] != b"DICM":
        return ""
    return _read_meta_texts(data)[0].get(0x0002, "")


def _skip_undefined(cursor: _Cursor, implicit: bool) -> None:
    """Skip a sequence (or UN value) of undefined length: items up to the Sequence Delimitation Item."""
    while True:
        if not cursor.need(8):
            raise Unusual("file ends inside a sequence")
        group, element, length = _TAG_LENGTH.unpack_from(cursor.data, cursor.pos)
        tag = group << 16 | element
        cursor.pos += 8
        if tag == _SEQUENCE_END:
            return
        if tag != _ITEM:
            raise Unusual("sequence without items")
        if length == _UNDEFINED:
            _skip_item(cursor, implicit)
        else:
            cursor.skip(length)


def _skip_item(cursor: _Cursor, implicit: bool) -> None:
    """Skip the elements of an item of undefined length up to its Item Delimitation Item."""
    while True:
        if not cursor.need(12):
            raise Unusual("file ends inside an item")
        data, pos = cursor.data, cursor.pos
        group, element, vr_bytes = _TAG_VR.unpack_from(data, pos)
        if group << 16 | element == _ITEM_END:
            cursor.pos += 8
            return
        if implicit:
            length, header_length = _U32.unpack_from(data, pos + 4)[0], 8
        elif vr_bytes in _LONG_VRS:
            length, header_length = _U32.unpack_from(data, pos + 8)[0], 12
        else:
            if not (vr_bytes.isalpha() and vr_bytes.isupper()):
                raise Unusual("not a VR")
            length, header_length = _U16.unpack_from(data, pos + 6)[0], 8
        cursor.pos += header_length
        if length == _UNDEFINED:
            _skip_undefined(cursor, implicit or vr_bytes == b"UN")
        else:
            cursor.skip(length)

