"""Turn what the user opened (folder, DICOMDIR, files, zip) into a list of candidate files.

Nothing here parses images; it only decides which paths to try and which references are dangling.
"""
from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from liverview.io.archive import ZipRefused, unpack_zip
from liverview.io.lean_header import Unusual, read_media_storage_class
from liverview.io.sniff import NOT_REGULAR_REASON
from liverview.io.skipped import SkippedFile
from liverview.progress import ShouldStop

log = logging.getLogger(__name__)

#: Media Storage Directory Storage, the SOP Class of a DICOMDIR.
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"

# Operating-system litter, never worth a line in the skipped list.
_SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
# Viewer executables, reports and web pages on CDs: listed as skipped without being parsed.
_SKIP_SUFFIXES = {".txt", ".xml", ".html", ".htm", ".pdf", ".jpg", ".jpeg", ".png", ".gif", ".exe",
                  ".ini", ".inf", ".json", ".md", ".csv", ".tsv", ".js", ".css", ".dll", ".bat", ".sh"}


@dataclass
class SourceFiles:
    """Candidate DICOM files plus the files already known to be unusable."""

    paths: list[str] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    dicomdirs: list[str] = field(default_factory=list)


class SourceError(OSError):
    """PATH itself cannot be read (missing, permission denied, not a zip/folder/DICOM)."""


def is_dicomdir(path: str | os.PathLike[str]) -> bool:
    """True for a DICOMDIR: by name, or by its Media Storage SOP Class (1.2.840.10008.1.3.10)."""
    if Path(path).name.upper() == "DICOMDIR":
        return True
    # The file meta read here, without pydicom, for every file opened by name: importing pydicom costs a
    # tenth of a second, and ordinary image files never need it.
    try:
        return read_media_storage_class(str(path)) == DICOMDIR_CLASS
    except OSError:
        return False
    except Unusual:
        pass
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return False
    return str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS


def list_dicomdir(path: str) -> SourceFiles:
    """Files referenced by a DICOMDIR's directory records; dangling references become skipped files.

    Uses (0004,1500) Referenced File ID of every record relative to the DICOMDIR's folder.
    """
    import pydicom

    out = SourceFiles(dicomdirs=[path])
    root = Path(path).parent
    try:
        ds = pydicom.dcmread(path, force=True)
        records = ds.DirectoryRecordSequence
    except Exception as exc:  # noqa: BLE001 - any parse failure of an untrusted file is reported
        out.skipped.append(SkippedFile(path, f"DICOMDIR cannot be read: {exc}"))
        return out
    seen: set[str] = set()
    for record in records:
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        candidate = _resolve_case_insensitive(root, parts)
        if candidate is None:
            missing = str(root.joinpath(*parts))
            if missing not in seen:
                seen.add(missing)
                out.skipped.append(SkippedFile(missing, "listed in DICOMDIR but missing from the media"))
            continue
        if str(candidate) not in seen:
            seen.add(str(candidate))
            out.paths.append(str(candidate))
    return out


def _resolve_case_insensitive(root: Path, parts: list[str]) -> Path | None:
    """CD file IDs are upper-case ISO 9660 names; the mounted folder may be lower-case."""
    current = root
    for part in parts:
        direct = current / part
        if direct.exists():
            current = direct
            continue
        try:
            match = next((c for c in current.iterdir() if c.name.upper() == part.upper()), None)
        except OSError:
            return None
        if match is None:
            return None
        current = match
    return current if current.is_file() else None


def collect_files(paths: list[str | os.PathLike[str]], should_stop: ShouldStop | None = None) -> SourceFiles:
    """Expand folders (recursively), DICOMDIRs and zips into candidate files.

    Raises SourceError when none of `paths` can be read at all or a zip is refused, and `Cancelled`
    when `should_stop()` says so while a zip is unpacked.
    """
    out = SourceFiles()
    readable = 0
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            out.skipped.append(SkippedFile(str(path), "does not exist"))
            continue
        readable += 1
        if path.is_dir():
            _walk_folder(path, out)
        elif not path.is_file():
            out.skipped.append(SkippedFile(str(path), NOT_REGULAR_REASON))
        elif zipfile.is_zipfile(path):
            try:
                unpacked = unpack_zip(path, should_stop)
            except (ZipRefused, zipfile.BadZipFile) as exc:
                raise SourceError(str(exc)) from exc
            out.skipped.extend(unpacked.skipped)
            _merge(out, _walk_folder_of(unpacked.folder))
        elif is_dicomdir(path):
            _merge(out, list_dicomdir(str(path)))
        else:
            out.paths.append(str(path))
    if readable == 0:
        raise SourceError("; ".join(f"{s.path}: {s.reason}" for s in out.skipped) or "nothing to open")
    out.paths = list(dict.fromkeys(out.paths))
    return out


def _merge(into: SourceFiles, other: SourceFiles) -> None:
    into.paths.extend(other.paths)
    into.skipped.extend(other.skipped)
    into.dicomdirs.extend(other.dicomdirs)


def _walk_folder_of(path: Path) -> SourceFiles:
    out = SourceFiles()
    _walk_folder(path, out)
    return out


def _walk(folder: str, out: SourceFiles) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
    """(folder, its non-folder entries by name) for `folder` and every folder below it, top down, sub-folders
    by name, hidden ones and links to folders left out (as `os.walk` does). The entries know their type
    without another system call, so a pipe or device is told apart before anything opens it."""
    try:
        with os.scandir(folder) as found:
            entries = list(found)
    except OSError as exc:
        out.skipped.append(SkippedFile(str(exc.filename or folder), f"cannot read folder: {exc.strerror or exc}"))
        return
    folders: list[os.DirEntry[str]] = []
    files: list[os.DirEntry[str]] = []
    for entry in entries:
        try:
            is_folder = entry.is_dir()
        except OSError:
            is_folder = False
        (folders if is_folder else files).append(entry)
    yield folder, sorted(files, key=lambda e: e.name)
    for entry in sorted(folders, key=lambda e: e.name):
        if not entry.name.startswith(".") and not entry.is_symlink():
            yield from _walk(entry.path, out)


def _walk_folder(folder: Path, out: SourceFiles) -> None:
    """Every file below `folder`; a DICOMDIR found on the way only contributes its dangling references,
    since the walk already finds the files it lists."""
    try:
        for dirpath, entries in _walk(str(folder), out):
            for entry in entries:
                name, full = entry.name, os.path.join(dirpath, entry.name)
                if name.startswith(".") or name in _SKIP_NAMES:
                    continue
                if not entry.is_file():
                    reason = "a link to nothing" if entry.is_symlink() and not os.path.exists(full) else NOT_REGULAR_REASON
                    out.skipped.append(SkippedFile(full, reason))
                    continue
                if Path(name).suffix.lower() in _SKIP_SUFFIXES:
                    out.skipped.append(SkippedFile(full, f"not DICOM ({Path(name).suffix.lower()} file)"))
                    continue
                if name.upper() == "DICOMDIR":
                    listed = list_dicomdir(full)
                    out.skipped.append(SkippedFile(full, "DICOMDIR index, not an image (the images it lists are "
                                                         "read from the folder)"))
                    out.skipped.extend(listed.skipped)
                    out.dicomdirs.append(full)
                    continue
                out.paths.append(full)
    except OSError as exc:
        out.skipped.append(SkippedFile(str(folder), f"cannot read folder: {exc}"))
