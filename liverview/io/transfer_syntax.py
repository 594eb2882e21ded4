"""Transfer syntaxes (PS3.5 section 10, PS3.6 annex A): native, deflated, big endian or compressed.

The compressed syntaxes a CT or MR archive uses are listed here, so that classifying a file does not
import pydicom (about 0.1 s of a process's start); an unlisted UID is asked of pydicom.
"""
from __future__ import annotations

IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
EXPLICIT_BIG = "1.2.840.10008.1.2.2"
NATIVE_LITTLE = frozenset({IMPLICIT_LITTLE, EXPLICIT_LITTLE})
#: JPEG-LS lossless and near-lossless.
JPEG_LS = frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
#: JPEG 2000 (part 1) lossless and lossy.
JPEG_2000 = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})
#: Decoded from the file's fragments without pydicom (`io.pixels`): CharLS and OpenJPEG take the bare codestream.
DIRECT_DECODING = JPEG_LS | JPEG_2000
#: Encapsulated, explicit VR little endian: JPEG baseline, extended and lossless, JPEG-LS, JPEG 2000
#: (and part 2), High-Throughput JPEG 2000, RLE.
COMPRESSED = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    *JPEG_LS, *JPEG_2000, "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
    "1.2.840.10008.1.2.5",
})
_NOT_COMPRESSED = NATIVE_LITTLE | {DEFLATED, EXPLICIT_BIG}
_ENCAPSULATED: dict[str, bool] = {}


def is_compressed(transfer_syntax: str) -> bool:
    """True for the encapsulated (compressed) transfer syntaxes; ValueError for a UID that is not a
    transfer syntax."""
    if transfer_syntax in COMPRESSED:
        return True
    if transfer_syntax in _NOT_COMPRESSED:
        return False
    import pydicom.uid
    return pydicom.uid.UID(transfer_syntax).is_compressed


def is_encapsulated_explicit_little(transfer_syntax: str) -> bool:
    """A compressed syntax whose data set is explicit VR little endian, as PS3.5 A.4 has them all."""
    if transfer_syntax in COMPRESSED:
        return True
    if transfer_syntax in _NOT_COMPRESSED:
        return False
    if transfer_syntax not in _ENCAPSULATED:
        from pydicom.uid import UID
        uid = UID(transfer_syntax)
        _ENCAPSULATED[transfer_syntax] = (uid.is_transfer_syntax and uid.is_compressed and uid.is_little_endian
                                          and not uid.is_implicit_VR and not uid.is_deflated)
    return _ENCAPSULATED[transfer_syntax]


__all__ = ["COMPRESSED", "DEFLATED", "DIRECT_DECODING", "EXPLICIT_BIG", "EXPLICIT_LITTLE", "IMPLICIT_LITTLE", "JPEG_2000", "JPEG_LS", "NATIVE_LITTLE",
           "is_compressed", "is_encapsulated_explicit_little"]
