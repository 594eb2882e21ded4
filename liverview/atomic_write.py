"""The one way liverview writes a file it keeps (annotations, exports, model bundles, checkpoints,
datasets): after a crash the file holds either the old or the new content, never a mixture, and it
has the permissions of a normally created file."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any writer thread runs.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_bytes_atomic(path: Path, write: Callable[[str], None]) -> Path:
    """`write(temp_path)` in the same folder, fsync, normal permissions (mkstemp makes 0600),
    `os.replace` onto `path`, fsync of the folder. The temporary file is removed on any failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
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


def write_text_atomic(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    write_bytes_atomic(path, write)


def write_json_atomic(path: Path, document: Any, **dumps: Any) -> None:
    """`document` as JSON (indent 1 unless `dumps` says otherwise)."""
    write_text_atomic(path, json.dumps(document, **{"indent": 1, "ensure_ascii": False, **dumps}))


__all__ = ["write_bytes_atomic", "write_json_atomic", "write_text_atomic"]
