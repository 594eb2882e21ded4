"""Where annotation files live (outside any DICOM folder), damaged copies, and timestamps."""
from __future__ import annotations

import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

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


def keep_damaged_copy(path: Path) -> Path:
    """Copy a file that cannot be read next to it, so nothing is lost while a fresh one is started."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.stem}.damaged-{stamp}{path.suffix}")
    shutil.copy2(path, target)
    return target


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
