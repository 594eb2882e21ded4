"""The local retrieve cache: series land in a staging folder and are published by one rename when complete.

Layout under the root::

    staging/<series uid>.<pid>.<random>/   a transfer in progress (or left by a killed one)
    studies/<study uid>/<series uid>/      complete series, one file per instance

Only ``studies/`` is ever opened, so a transfer killed half-way leaves nothing that looks complete;
its staging folder is removed by the next cache that finds its process gone.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from liverview.processes import pid_alive
from liverview.net.errors import CacheError

log = logging.getLogger(__name__)

DEFAULT_LIMIT_BYTES = 20 * 1024**3
_UID = re.compile(r"^[0-9.]{1,64}$")


def safe_uid(uid: str) -> str:
    """`uid` as a folder name; anything that is not a plain DICOM UID (untrusted input) is refused."""
    if not _UID.match(uid) or uid.strip(".") != uid:
        raise CacheError(f"The PACS sent an invalid UID ({uid[:70]!r}); the image cannot be stored.")
    return uid


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


@dataclass
class RetrieveCache:
    """Retrieved series on disk, at most `limit_bytes` (least recently used studies go first)."""

    root: Path
    limit_bytes: int = DEFAULT_LIMIT_BYTES

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        try:
            (self.root / "staging").mkdir(parents=True, exist_ok=True)
            (self.root / "studies").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"The PACS cache folder {self.root} cannot be created ({exc.strerror}).") from exc
        self.remove_abandoned_staging()

    def remove_abandoned_staging(self) -> int:
        """Delete staging folders whose process is gone (a killed or crashed transfer); returns how many."""
        removed = 0
        for folder in (self.root / "staging").iterdir():
            parts = folder.name.split(".")
            pid = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
            if pid is None or not pid_alive(pid):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def new_staging(self, series_uid: str) -> Path:
        """An empty folder for one series' transfer."""
        try:
            return Path(tempfile.mkdtemp(prefix=f"{safe_uid(series_uid)}.{os.getpid()}.", dir=self.root / "staging"))
        except OSError as exc:
            raise CacheError(f"The PACS cache folder {self.root} cannot be written ({exc.strerror}).") from exc

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def publish(self, staging: Path, study_uid: str, series_uid: str) -> Path:
        """Make a complete series visible by renaming its staging folder; an older copy is replaced."""
        study = self.study_dir(study_uid)
        target = study / safe_uid(series_uid)
        try:
            study.mkdir(parents=True, exist_ok=True)
            if target.exists():
                old = self.new_staging(series_uid)
                os.replace(target, old / "old")
                shutil.rmtree(old, ignore_errors=True)
            os.replace(staging, target)
        except OSError as exc:
            raise CacheError(f"The retrieved series cannot be moved into the cache {self.root} ({exc.strerror}).") from exc
        self.touch(study_uid)
        self.evict_to_limit(keep=study_uid)
        return target

    def study_dir(self, study_uid: str) -> Path:
        return self.root / "studies" / safe_uid(study_uid)

    def series_dir(self, study_uid: str, series_uid: str) -> Path | None:
        """The published series, or None when it is not (completely) in the cache."""
        folder = self.study_dir(study_uid) / safe_uid(series_uid)
        return folder if folder.is_dir() else None

    def touch(self, study_uid: str) -> None:
        folder = self.study_dir(study_uid)
        if folder.is_dir():
            now = time.time()
            os.utime(folder, (now, now))

    def size_bytes(self) -> int:
        return _folder_bytes(self.root)

    def evict_to_limit(self, keep: str | None = None) -> list[str]:
        """Remove least recently used studies (never `keep`) until the cache fits its limit."""
        studies = sorted((p for p in (self.root / "studies").iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        sizes = {p: _folder_bytes(p) for p in studies}
        total = sum(sizes.values())
        removed = []
        for study in studies:
            if total <= self.limit_bytes:
                break
            if study.name == keep:
                continue
            shutil.rmtree(study, ignore_errors=True)
            total -= sizes[study]
            removed.append(study.name)
            log.info("cache limit: removed a study of %d MB", sizes[study] // 2**20)
        return removed

    def clear(self) -> None:
        """Remove every retrieved study (transfers in progress keep their staging folders)."""
        shutil.rmtree(self.root / "studies", ignore_errors=True)
        (self.root / "studies").mkdir(parents=True, exist_ok=True)
