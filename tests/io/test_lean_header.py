"""The lean header reader gives exactly what pydicom gives, on every file of the corpus and real series."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from liverview.io import lean_header
from liverview.io.headers import FileHeader, read_header
from liverview.io.lean_header import Unusual, read_lean_fields


def _as_plain(result) -> object:
    if not isinstance(result, FileHeader):
        return ("skipped", result.path, result.reason)
    plain = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "frames"}
    plain["frames"] = [{f.name: getattr(frame, f.name) for f in dataclasses.fields(frame) if f.name != "header"}
                       for frame in result.frames]
    return plain


def _files(*roots: Path) -> list[str]:
    return sorted(os.path.join(d, f) for root in roots for d, _, names in os.walk(root) for f in names)


@pytest.fixture(scope="module")
def real_series(corpus_dir) -> Path:
    return corpus_dir.parent / "series"


def test_lean_and_pydicom_headers_are_identical_on_corpus_and_real_series(corpus_dir, real_series):
    files = _files(corpus_dir, real_series)
    assert len(files) > 134 + 150
    different = [path for path in files if _as_plain(read_header(path)) != _as_plain(read_header(path, lean=False))]
    assert not different


def test_real_ct_series_take_the_lean_path(real_series, monkeypatch):
    """Every file of both real series is read without pydicom (the identity test above would pass
    trivially if the lean reader gave up on everything)."""
    files = [f for f in _files(real_series) if f.endswith(".dcm")]
    assert len(files) == 150
    for path in files:
        read_lean_fields(path)  # raises Unusual if pydicom were needed


@pytest.mark.parametrize("damage, reason", [
    (lambda b: b[:128] + b"XXXX" + b[132:], "no preamble"),
    (lambda b: b.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.2\x00", 1), "transfer syntax"),
])
def test_unusual_files_are_left_to_pydicom(tmp_path, crlm_dir, damage, reason):
    source = sorted(crlm_dir.glob("*.dcm"))[0].read_bytes()
    path = tmp_path / "x.dcm"
    path.write_bytes(damage(source))
    with pytest.raises(Unusual, match=reason):
        read_lean_fields(str(path))


def test_lean_reader_reads_only_the_header(crlm_dir, monkeypatch):
    """Bytes read: the header block, never the pixel data."""
    reads: list[int] = []
    real_cursor_init = lean_header._Cursor.__init__

    def counting_init(self, fh):
        real_read = fh.read

        class Counting:
            def __getattr__(self, name):
                return getattr(fh, name)

            def read(self, n=-1):
                data = real_read(n)
                reads.append(len(data))
                return data

        real_cursor_init(self, Counting())

    monkeypatch.setattr(lean_header._Cursor, "__init__", counting_init)
    path = str(sorted(crlm_dir.glob("*.dcm"))[0])
    fields = read_lean_fields(path)
    assert sum(reads) <= 2 * lean_header.PREFIX_BYTES
    assert fields.pixel_element().offset < os.path.getsize(path) - 512 * 512
