"""liverview's unpack folders under its cache: one per process, locked while the process lives, so
that the next start can tell the leftovers of a killed process and remove them.

Kept free of DICOM code so that the application can clean up at start-up without importing a parser.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from liverview.paths import user_cache_dir

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

log = logging.getLogger(__name__)

#: A folder without its lock file is being created, or was left by a process killed while creating it.
_HALF_CREATED_AGE_S = 60.0
_LOCK_NAME = ".lock"


def unpack_root() -> Path:
    """Parent of every process's unpack folder: <cache>/unpacked."""
    root = user_cache_dir() / "unpacked"
    root.mkdir(parents=True, exist_ok=True)
    return root


# One folder per process, locked while the process lives: a lock that can be taken marks the folder of
# a process that is gone (killed, crashed), whose leftovers the next start removes.
_session: tuple[Path, BinaryIO] | None = None
_atexit_registered = False


def session_folder() -> Path:
    """This process's unpack folder, created (after removing stale ones) on first use."""
    global _session, _atexit_registered
    root = unpack_root()
    if _session is not None and _session[0].parent != root:
        _remove_session()  # the cache folder was moved (LIVERVIEW_CACHE_DIR changed)
    if _session is None:
        remove_stale_unpacks()
        folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
        lock = open(folder / _LOCK_NAME, "wb")
        if not _try_lock(lock):
            lock.close()
            raise OSError(f"cannot lock the unpack folder {folder}")
        if not _atexit_registered:
            atexit.register(_remove_session)
            _atexit_registered = True
        _session = (folder, lock)
    return _session[0]


def _remove_session() -> None:
    global _session
    if _session is not None:
        folder, lock = _session
        lock.close()
        shutil.rmtree(folder, ignore_errors=True)
        _session = None


def remove_stale_unpacks() -> list[Path]:
    """Remove the unpack folders of processes that no longer run; returns the folders removed.

    Called at start-up (and before this process's first unpack), so that zips unpacked by a process
    that was killed do not stay on disk for good.
    """
    removed: list[Path] = []
    own = _session[0] if _session is not None else None
    try:
        entries = list(unpack_root().iterdir())
    except OSError:
        return removed
    for folder in entries:
        if folder == own or not folder.is_dir():
            continue
        if _is_abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    if removed:
        log.info("removed %d unpack folder(s) left by processes that ended: %s", len(removed),
                 ", ".join(str(f) for f in removed))
    return removed


def _is_abandoned(folder: Path) -> bool:
    try:
        lock = open(folder / _LOCK_NAME, "rb+")
    except FileNotFoundError:
        try:
            return time.time() - folder.stat().st_mtime > _HALF_CREATED_AGE_S
        except OSError:
            return False
    except OSError:
        return False
    with lock:
        return _try_lock(lock)


def _try_lock(fh: BinaryIO) -> bool:
    """Take an exclusive lock on `fh` without waiting; released when `fh` is closed."""
    try:
        if sys.platform == "win32":
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
