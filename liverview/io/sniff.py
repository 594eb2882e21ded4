"""Decide whether bytes are DICOM from a bounded prefix, and cap how much a header parse may read.

Real CDs and downloads hold ISO images, videos and viewer binaries named like ``IM000001``. Parsing
such a file as DICOM (``force=True``) walks it element by element to its end - minutes for gigabytes.
Looking at the first few kilobytes answers "is this DICOM?" in milliseconds whatever the file's size.
"""
from __future__ import annotations

import io
import os
import stat
import warnings
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

#: Bytes looked at to decide: the 128-byte preamble, "DICM", and the first elements of a file without it.
PREFIX_BYTES = 8192
#: Bytes a header parse may read (values larger than the parser's defer size are skipped, not read):
#: an enhanced CT of 2,000 frames has a few megabytes of per-frame functional groups.
MAX_HEADER_BYTES = 16 * 1024**2

NOT_DICOM_REASON = "no DICOM preamble and no recognisable DICOM attributes"
NOT_REGULAR_REASON = "not a regular file (a pipe, device or socket)"


class NotARegularFile(OSError):
    """A pipe, device or socket: reading it could wait for ever (a pipe) or never end (/dev/zero)."""


def open_regular_file(path: str | os.PathLike[str]) -> BinaryIO:
    """`path` opened for reading in binary; raises `NotARegularFile` unless it is a regular file. The
    open itself does not wait for a pipe's writer, and the type is checked on what was opened."""
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # POSIX; Windows has no FIFOs in its file system
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | nonblocking)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(NOT_REGULAR_REASON)
        # O_NONBLOCK changes nothing for a regular file's reads, so it is not switched back off.
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def has_dicom_preamble(prefix: bytes) -> bool:
    """The 128-byte preamble followed by "DICM" (PS3.10 7.1)."""
    return prefix[128:132] == b"DICM"


def prefix_looks_like_dicom(prefix: bytes) -> bool:
    """True when `prefix` (the first bytes of a file) starts with DICOM: the preamble, or - for files
    without one, as on old CDs - data elements that name real image attributes."""
    if has_dicom_preamble(prefix):
        return True
    import pydicom  # here: only files without a preamble need it

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(prefix), force=True, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - garbage is expected here; it only means "not DICOM"
        return False
    return looks_like_dicom(ds)


def command_set_runs_on(prefix: bytes) -> bool:
    """True when the data set after the file meta opens with command elements (group 0000) that go on
    past the whole prefix: zeros or other filler behind a DICOM preamble, not a data set. (A real
    command set, kept in some network dumps, is a few hundred bytes.)"""
    if len(prefix) < PREFIX_BYTES or not _data_set_starts_in_group_0000(prefix):
        return False
    import pydicom  # here: rare files, and pydicom is slow to import

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(prefix), force=True, stop_before_pixels=True)
        tags = list(ds.keys())
    except Exception:  # noqa: BLE001 - the full parse reports what is wrong with a broken file
        return False
    return bool(tags) and all(t.group == 0 for t in tags)


def _data_set_starts_in_group_0000(prefix: bytes) -> bool:
    """Where (0002,0000) File Meta Information Group Length says the data set starts; without it, assume
    it may (the caller then parses the prefix to see)."""
    if prefix[132:138] != b"\x02\x00\x00\x00UL":
        return True
    start = 144 + int.from_bytes(prefix[140:144], "little")
    return prefix[start:start + 2] == b"\x00\x00"


def looks_like_dicom(ds: Dataset) -> bool:
    """A forced parse turns any bytes into a dataset; real DICOM names several attributes of the
    identifying (0008), patient (0010), acquisition (0018), relationship (0020) and image (0028)
    groups, with at least one of group 0008."""
    try:
        tags = list(ds.keys())
    except Exception:  # noqa: BLE001
        return False
    if len(tags) < 4:
        return False
    known = sum(1 for t in tags if t.group in (0x0008, 0x0010, 0x0018, 0x0020, 0x0028))
    return known >= 3 and any(t.group == 0x0008 for t in tags)


class HeaderTooLarge(ValueError):
    """A header parse read more than `MAX_HEADER_BYTES`: a hostile or non-DICOM file."""


class BoundedReader(io.RawIOBase):
    """A read-only binary file that raises `HeaderTooLarge` once `limit` bytes have been read.

    Seeks are free (deferred values are skipped by seeking), so the bound is on work, not file size.
    """

    def __init__(self, raw: BinaryIO, limit: int | None = None) -> None:
        super().__init__()
        self._raw = raw
        self._limit = MAX_HEADER_BYTES if limit is None else limit
        self._left = self._limit
        self.name = raw.name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._left + 1
        data = self._raw.read(min(size, self._left + 1))
        self._left -= len(data)
        if self._left < 0:
            raise HeaderTooLarge(f"header larger than {self._limit / 1024**2:g} MiB (not DICOM, or a "
                                 "hostile file)")
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()
