"""Large non-DICOM files and hostile zips: skipped or refused after a bounded amount of work (#19).

Time bounds are asserted as bytes read or inflated, never by the clock.
"""
from __future__ import annotations

import builtins
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from liverview.io import scan_paths
from liverview.io import archive, sniff, unpack_folder
from liverview.io.archive import ZipRefused, unpack_zip
from liverview.io.sniff import PREFIX_BYTES
from liverview.io.sources import SourceError

REPO = Path(__file__).resolve().parents[2]
GiB = 1024**3


@pytest.fixture
def bytes_read(monkeypatch):
    """Bytes read through `open()` or `sniff.open_regular_file()` per path, for every file opened while the test
    runs."""
    counts: dict[str, int] = defaultdict(int)
    real_open = builtins.open

    class Counting:
        def __init__(self, fh, path: str) -> None:
            self._fh, self._path = fh, path

        def read(self, *args):
            data = self._fh.read(*args)
            counts[self._path] += len(data)
            return data

        def readinto(self, buffer):
            n = self._fh.readinto(buffer)
            counts[self._path] += n or 0
            return n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()

        def __getattr__(self, name):
            return getattr(self._fh, name)

    def counting_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and "b" in mode and "r" in mode:
            return Counting(fh, os.path.realpath(file))
        return fh

    real_open_regular = sniff.open_regular_file
    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(sniff, "open_regular_file", lambda path: Counting(real_open_regular(path), os.path.realpath(path)))
    return counts


def _few_slices(crlm_dir: Path, target: Path, n: int = 5) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    files = sorted(crlm_dir.glob("*.dcm"))[18:18 + n]
    for f in files:
        (target / f.name).write_bytes(f.read_bytes())
    return files


# -- large files without an extension in a study folder ----------------------------------------------

def test_sparse_2gib_file_without_extension_is_skipped_after_its_prefix(tmp_path, crlm_dir, bytes_read):
    study = tmp_path / "study"
    _few_slices(crlm_dir, study)
    big = study / "IM000001"
    with open(big, "wb") as fh:
        fh.truncate(2 * GiB)  # sparse: no real disk use
    scan = scan_paths(study)
    assert [s.n_images for s in scan.series] == [5]
    reasons = {Path(s.path).name: s.reason for s in scan.skipped}
    assert "no DICOM preamble" in reasons["IM000001"]
    assert bytes_read[os.path.realpath(big)] <= 2 * PREFIX_BYTES  # the lean reader's look, then the sniff's


def test_pipes_and_devices_are_skipped_not_read(tmp_path, crlm_dir):
    """A FIFO in a study folder or given by name waited for a writer for ever; /dev/zero given by name was
    read as a zip until the memory ran out (22 GB, then killed)."""
    study = tmp_path / "study"
    _few_slices(crlm_dir, study)
    os.mkfifo(study / "p.dcm")
    os.mkfifo(tmp_path / "q.dcm")
    code = ("import json, sys\n"
            "from liverview.io import scan_paths\n"
            "scan = scan_paths(sys.argv[1:])\n"
            "print(json.dumps([[s.n_images for s in scan.series], {s.path: s.reason for s in scan.skipped}]))\n")
    result = subprocess.run([sys.executable, "-c", code, str(study), str(tmp_path / "q.dcm"), "/dev/zero"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    series, reasons = json.loads(result.stdout)
    assert series == [5]
    for path in (study / "p.dcm", tmp_path / "q.dcm", "/dev/zero"):
        assert reasons[str(path)] == "not a regular file (a pipe, device or socket)"


def test_large_file_with_a_dicom_preamble_and_filler_is_skipped_after_its_prefix(tmp_path, crlm_dir, bytes_read):
    study = tmp_path / "study"
    _few_slices(crlm_dir, study)
    big = study / "IM000002"
    meta = b"\x02\x00\x10\x00UI\x14\x001.2.840.10008.1.2.1\x00"
    with open(big, "wb") as fh:
        fh.write(bytes(128) + b"DICM" + meta)
        fh.truncate(2 * GiB)
    scan = scan_paths(study)
    assert [s.n_images for s in scan.series] == [5]
    reasons = {Path(s.path).name: s.reason for s in scan.skipped}
    assert "no data set" in reasons["IM000002"]
    assert bytes_read[os.path.realpath(big)] <= 3 * PREFIX_BYTES


def test_header_walk_stops_at_pixel_data_and_at_the_read_cap(tmp_path, crlm_dir, bytes_read, monkeypatch):
    """Trailing bytes after Pixel Data are never walked; a header of endless elements stops at the cap."""
    cap = 1024**2  # the real cap (16 MiB) behaves the same, only slower to walk in a test
    monkeypatch.setattr(sniff, "MAX_HEADER_BYTES", cap)
    source = sorted(crlm_dir.glob("*.dcm"))[20]
    padded = tmp_path / "padded.dcm"
    data = source.read_bytes()
    padded.write_bytes(data)
    with open(padded, "r+b") as fh:
        fh.truncate(len(data) + GiB)  # 1 GiB of zeros after the image
    endless = tmp_path / "endless.dcm"
    with open(endless, "wb") as fh:
        fh.write(data[:132 + 12 + int.from_bytes(data[140:144], "little")])  # preamble and file meta
        # (0008,0005) then ascending private elements of 8 bytes each, far beyond the cap.
        fh.write(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100")
        count = cap // 12 + 1000
        group = np.full(count, 0x0009, dtype="<u2")
        element = np.arange(count, dtype=np.uint64) % 0xFFFF + 1
        records = np.zeros(count, dtype=[("g", "<u2"), ("e", "<u2"), ("vr", "S2"), ("n", "<u2"), ("v", "S4")])
        records["g"], records["e"], records["vr"], records["n"], records["v"] = group, element, b"LO", 4, b"abcd"
        records["g"] += (np.arange(count) // 0xFFFF * 2).astype(np.uint16)
        fh.write(records.tobytes())
    scan = scan_paths([padded, endless])
    assert [s.n_images for s in scan.series] == [1]
    assert bytes_read[os.path.realpath(padded)] <= len(data)
    reasons = {Path(s.path).name: s.reason for s in scan.skipped}
    assert "header larger than" in reasons["endless.dcm"]
    # Given by name, the file is also asked whether it is a zip (its last 64 KiB) or a DICOMDIR (its meta).
    # The lean reader gives up at the cap, then pydicom reads up to it and says why.
    assert bytes_read[os.path.realpath(endless)] <= 2 * cap + 4 * PREFIX_BYTES + 66 * 1024


# -- hostile zips ---------------------------------------------------------------------------------------

def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def _zeros_deflated(n_mib: int) -> tuple[bytes, int]:
    """A raw deflate stream of `n_mib` MiB of zeros (about 1 KiB per MiB) and its CRC-32, built from one
    compressed MiB repeated - a full flush makes every block independent of the ones before."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    zeros, crc = bytes(1 << 20), 0
    for _ in range(n_mib):
        crc = zlib.crc32(zeros, crc)
    return block * n_mib + compressor.flush(zlib.Z_FINISH), crc


def _write_zip(path: Path, members: list[tuple[str, bytes, int, int]]) -> None:
    """A zip of deflated members (name, deflated bytes, CRC-32, declared size), written by hand so
    that a test can declare any size it likes."""
    local, central = bytearray(), bytearray()
    for name, data, crc, size in members:
        raw_name = name.encode()
        header_offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(raw_name), 0)
        local += raw_name + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size,
                               len(raw_name), 0, 0, 0, 0, 0, header_offset) + raw_name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))


def _dicom_members(crlm_dir: Path, n: int = 3) -> list[tuple[str, bytes, int, int]]:
    members = []
    for f in sorted(crlm_dir.glob("*.dcm"))[19:19 + n]:
        data = f.read_bytes()
        members.append((f"DICOM/{f.name}", _deflate(data), zlib.crc32(data), len(data)))
    return members


def _disk_use(folder: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in folder.rglob("*") if f.is_file())


def test_zip_bomb_is_skipped_after_its_prefix_without_filling_the_disk(tmp_path, crlm_dir):
    bomb, crc = _zeros_deflated(2048)
    archive_path = tmp_path / "study.zip"
    _write_zip(archive_path, _dicom_members(crlm_dir) + [("DICOM/IM000001", bomb, crc, 2 * GiB)])
    assert archive_path.stat().st_size < 3 * 1024**2
    unpacked = unpack_zip(archive_path)
    assert [Path(s.path).name for s in unpacked.skipped] == ["IM000001"]
    assert "not DICOM" in unpacked.skipped[0].reason
    dicom_bytes = sum(len(f.read_bytes()) for f in sorted(crlm_dir.glob("*.dcm"))[19:22])
    assert unpacked.bytes_inflated <= dicom_bytes + PREFIX_BYTES
    assert _disk_use(unpacked.folder) < dicom_bytes + 1024**2
    assert unpacked.folder.is_relative_to(unpack_folder.unpack_root())

    scan = scan_paths(archive_path)
    assert [s.n_images for s in scan.series] == [3]
    assert any(s.path.endswith("study.zip/DICOM/IM000001") for s in scan.skipped)


def test_member_larger_than_its_declared_size_is_stopped_and_reported(tmp_path, crlm_dir):
    real = sorted(crlm_dir.glob("*.dcm"))[20].read_bytes()
    content = real + bytes(64 * 1024**2)  # a DICOM start, then 64 MiB more than declared
    archive_path = tmp_path / "lying.zip"
    _write_zip(archive_path, _dicom_members(crlm_dir, 2) + [("DICOM/liar.dcm", _deflate(content),
                                                           zlib.crc32(content), len(real))])
    unpacked = unpack_zip(archive_path)
    assert [Path(s.path).name for s in unpacked.skipped] == ["liar.dcm"]
    assert "does not match the size or checksum" in unpacked.skipped[0].reason
    assert not (unpacked.folder / "DICOM" / "liar.dcm").exists()
    members_declared = sum(size for _, _, _, size in _dicom_members(crlm_dir, 2)) + len(real)
    assert unpacked.bytes_inflated <= members_declared
    assert [s.n_images for s in scan_paths(archive_path).series] == [2]


def test_inflated_bytes_are_capped_whatever_the_zip_declares(tmp_path):
    dest = tmp_path / "member.dcm"
    stream = io.BytesIO(bytes(128) + b"DICM" + bytes(3 * 1024**2))
    with pytest.raises(ZipRefused, match="inflates to more than it declares"):
        archive._unpack_member(stream, dest, "x.zip/member.dcm", allowed=1024**2, skipped=[])
    assert stream.tell() <= 1024**2 + PREFIX_BYTES + archive._CHUNK_BYTES
    assert not dest.exists()


def test_zip_declaring_more_than_the_cap_is_refused_before_unpacking(tmp_path, crlm_dir, monkeypatch):
    monkeypatch.setattr(archive, "MAX_ZIP_UNPACKED_BYTES", 100_000)
    archive_path = tmp_path / "big.zip"
    _write_zip(archive_path, _dicom_members(crlm_dir, 1))
    with pytest.raises(SourceError, match="more than the"):
        scan_paths(archive_path)
    assert not any(unpack_folder.unpack_root().rglob("*.dcm"))


def test_unpack_of_a_killed_process_is_removed_at_the_next_start(tmp_path, crlm_dir):
    members = _dicom_members(crlm_dir, 6)
    archive_path = tmp_path / "study.zip"
    _write_zip(archive_path, members)
    cache = Path(os.environ["LIVERVIEW_CACHE_DIR"])
    own = unpack_folder.session_folder()  # a running liverview's folder must survive every clean-up
    # The child unpacks slowly (a pause after each member) so that it is surely killed half-way.
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from liverview.io import archive\n"
         "unpack = archive._unpack_member\n"
         "def slow(*args, **kwargs):\n"
         "    n = unpack(*args, **kwargs)\n"
         "    time.sleep(0.5)\n"
         "    return n\n"
         "archive._unpack_member = slow\n"
         "archive.unpack_zip(sys.argv[1])\n", str(archive_path)],
        env={**os.environ, "PYTHONPATH": str(REPO), "LIVERVIEW_CACHE_DIR": str(cache)})
    root = cache / "unpacked"
    try:
        deadline = time.monotonic() + 60
        while not list(root.rglob("*.dcm")) and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    leftovers = [f for f in root.iterdir() if f.is_dir() and f != own]
    assert len(leftovers) == 1 and list(leftovers[0].rglob("*.dcm"))
    assert len(list(leftovers[0].rglob("*.dcm"))) < len(members)  # killed half-way

    assert unpack_folder.remove_stale_unpacks() == leftovers  # what the next start does
    assert not leftovers[0].exists() and own.is_dir()


def test_a_file_cut_short_before_its_pixels_is_named_damaged(tmp_path, crlm_dir):
    """Walkthrough step 3: a truncated .dcm was explained as "CT object without an image"."""
    from liverview.io.headers import SkippedFile, read_header

    source = sorted(crlm_dir.glob("*.dcm"))[0]
    (tmp_path / "broken.dcm").write_bytes(source.read_bytes()[:3000])
    for lean in (True, False):
        skipped = read_header(str(tmp_path / "broken.dcm"), lean=lean)
        assert isinstance(skipped, SkippedFile)
        assert "512×512 CT image: the file is probably cut short (damaged)" in skipped.reason
