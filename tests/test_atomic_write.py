"""The one atomic writer: normal permissions, the old content survives a failed write, no temporary
file is left behind — used by annotations, exports, datasets, model bundles and checkpoints."""
from __future__ import annotations

import os
import stat

import pytest

from liverview.atomic_write import write_bytes_atomic, write_json_atomic, write_text_atomic


def test_written_with_the_permissions_of_a_normal_file(tmp_path):
    normal = tmp_path / "normal.txt"
    normal.write_text("x")
    path = tmp_path / "sub" / "atomic.txt"
    write_text_atomic(path, "hello")
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(normal.stat().st_mode)


def test_a_failed_write_keeps_the_old_content_and_leaves_nothing(tmp_path):
    path = tmp_path / "model.json"
    write_json_atomic(path, {"version": 1})

    def broken(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write('{"version": 2, "trunc')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(path, broken)
    assert path.read_text() == '{\n "version": 1\n}'
    assert sorted(os.listdir(tmp_path)) == ["model.json"]


def test_model_bundles_and_checkpoints_use_it():
    """Every writer of files liverview keeps goes through `write_bytes_atomic` (no second recipe). Two
    exceptions with reasons: the pseudonymisation key (private, 0600, created once by a hard link) and
    the dataset format's append of lesion lines (appending, by its one owner)."""
    from pathlib import Path

    import liverview

    root = Path(liverview.__file__).parent
    own = {"atomic_write.py", "deid.py", "dataset_format.py"}
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name not in own and ("os.replace(tmp" in p.read_text() or "fsync(" in p.read_text())]
    assert offenders == []
