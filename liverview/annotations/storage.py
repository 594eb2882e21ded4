"""Where annotation files live and how they are written: atomically, outside any DICOM folder."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from liverview.paths import user_data_dir

_UID_SAFE = re.compile(r"^[0-9.]{1,64}$")


def annotations_dir() -> Path:
    path = user_data_dir() / "annotations"
    path.mkdir(parents=True, exist_ok=True)
    return path


def annotation_path(study_uid: str, series_uid: str) -> Path:
    """Per-user file keyed by Study and Series Instance UID (never inside the source folder)."""
    def safe(uid: str) -> str:
        if _UID_SAFE.match(uid):
            return uid
        import hashlib

        return "x" + hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()[:32]

    return annotations_dir() / safe(study_uid) / f"{safe(series_uid)}.json"


def write_bytes_atomic(path: Path, write: Callable[[str], None]) -> Path:
    """The one way liverview writes a file it keeps: `write(temp_path)` in the same folder, fsync, the
    permissions of a normally created file (mkstemp makes 0600), `os.replace` onto `path`, fsync of the
    folder. After a crash the file holds either the old or the new content, never a mixture."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):
        dir_fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    write_bytes_atomic(path, write)


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(document, indent=1, ensure_ascii=False))


def keep_damaged_copy(path: Path) -> Path:
    """Copy a file that cannot be read next to it, so nothing is lost while a fresh one is started."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.stem}.damaged-{stamp}{path.suffix}")
    shutil.copy2(path, target)
    return target


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
