"""Study zips: each member is looked at in place and only DICOM members are unpacked, into a folder
under liverview's cache that a later start removes if this process is killed.

A hostile archive can neither write outside that folder (member names are sanitised) nor fill the
disk: the cap is checked on the sizes the archive declares *and* on the bytes actually inflated, and a
member that is not DICOM (an ISO image, a video, a 2 GiB run of zeros) is skipped after its first
few kilobytes instead of being inflated in full.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from liverview.io.skipped import SkippedFile
from liverview.io.sniff import NOT_DICOM_REASON, PREFIX_BYTES, prefix_looks_like_dicom
from liverview.io.unpack_folder import session_folder
from liverview.progress import Cancelled, ShouldStop, check_stop

log = logging.getLogger(__name__)

#: A study zip larger than this when unpacked is refused: a CD export of a whole-body CT is ~1-2 GB.
MAX_ZIP_UNPACKED_BYTES = 8 * 1024**3
#: Entries per zip; guards against archives of millions of empty members.
MAX_ZIP_MEMBERS = 200_000
#: Left free on the cache's disk whatever the archive says, so that unpacking never fills it.
DISK_RESERVE_BYTES = 1024**3
_CHUNK_BYTES = 1024**2


class ZipRefused(OSError):
    """The archive as a whole is refused: too many members, or more bytes than the cap allows."""


@dataclass
class UnpackedZip:
    """Where the DICOM members of one zip were unpacked, and the members that were not."""

    folder: Path
    skipped: list[SkippedFile] = field(default_factory=list)
    #: Bytes decompressed, including the prefixes of members skipped as not DICOM.
    bytes_inflated: int = 0


def unpack_zip(path: str | os.PathLike[str], should_stop: ShouldStop | None = None) -> UnpackedZip:
    """Unpack the DICOM members of the zip `path` into a fresh folder of this process's unpack folder.

    Raises `ZipRefused` when the archive is over the caps (nothing is left behind) and `Cancelled`
    when `should_stop()` says so. Members that are not DICOM or are corrupt (a size or checksum that
    lies) are listed in `skipped` with the reason; the rest still unpack.
    """
    path = Path(path)
    target = Path(tempfile.mkdtemp(prefix="zip-", dir=session_folder()))
    try:
        result = _unpack_members(path, target, should_stop)
    except (ZipRefused, Cancelled, zipfile.BadZipFile, OSError):
        shutil.rmtree(target, ignore_errors=True)
        raise
    log.info("unpacked %s into %s (%d bytes inflated, %d member(s) skipped)", path, target,
             result.bytes_inflated, len(result.skipped))
    return result


def _unpack_members(path: Path, target: Path, should_stop: ShouldStop | None) -> UnpackedZip:
    result = UnpackedZip(folder=target)
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_ZIP_MEMBERS:
            raise ZipRefused(f"{path}: zip holds {len(members)} files, more than the {MAX_ZIP_MEMBERS} allowed")
        cap = _unpack_cap(target)
        declared = sum(m.file_size for m in members)
        if declared > cap:
            raise ZipRefused(f"{path}: zip would unpack to {declared / 1024**3:.1f} GiB, more than the "
                             f"{cap / 1024**3:.1f} GiB allowed (free disk space less "
                             f"{DISK_RESERVE_BYTES / 1024**3:.0f} GiB, at most "
                             f"{MAX_ZIP_UNPACKED_BYTES / 1024**3:.0f} GiB)")
        for member in members:
            check_stop(should_stop, f"unpacking {path.name}")
            parts = [p for p in Path(member.filename.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
            if not parts:
                continue
            shown = f"{path}/{'/'.join(parts)}"
            dest = target.joinpath(*parts)
            try:
                with archive.open(member) as src:
                    result.bytes_inflated += _unpack_member(src, dest, shown, cap - result.bytes_inflated,
                                                            result.skipped)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                dest.unlink(missing_ok=True)
                result.skipped.append(SkippedFile(shown, f"corrupt zip member (its content does not match the "
                                                         f"size or checksum the zip records): {exc}"))
            except (NotImplementedError, RuntimeError) as exc:
                # Unsupported compression method, or an encrypted member.
                dest.unlink(missing_ok=True)
                result.skipped.append(SkippedFile(shown, f"zip member cannot be unpacked: {exc}"))
    return result


def _unpack_member(src: IO[bytes], dest: Path, shown: str, allowed: int, skipped: list[SkippedFile]) -> int:
    """Inflate one member into `dest` unless its first bytes say it is not DICOM; returns the bytes
    inflated. Raises `ZipRefused` as soon as more than `allowed` bytes have come out."""
    prefix = src.read(PREFIX_BYTES)
    if not prefix_looks_like_dicom(prefix):
        skipped.append(SkippedFile(shown, f"not DICOM ({NOT_DICOM_REASON}); not unpacked"))
        return len(prefix)
    inflated = len(prefix)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        out.write(prefix)
        while chunk := src.read(_CHUNK_BYTES):
            inflated += len(chunk)
            if inflated > allowed:
                out.close()
                dest.unlink(missing_ok=True)
                raise ZipRefused(f"{shown}: unpacking stopped at {allowed / 1024**3:.1f} GiB - the zip inflates to "
                                 "more than it declares (a zip bomb or a corrupt archive)")
            out.write(chunk)
    return inflated


def _unpack_cap(folder: Path) -> int:
    free = shutil.disk_usage(folder).free
    return max(0, min(MAX_ZIP_UNPACKED_BYTES, free - DISK_RESERVE_BYTES))
