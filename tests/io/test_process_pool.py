"""Scanning and compressed decoding on worker processes give exactly what the sequential loop gives:
the same series, order, progress reports, per-file errors and Cancel (#18)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

from liverview.io import frame_slots
from liverview.io import series as series_module
from liverview.io import volume as volume_module
from liverview.io.series import scan_paths
from liverview.io.process_pool import WORKER_NICENESS, map_in_order
from liverview.io.sources import collect_files
from liverview.io.volume import allocate_volume, fill_volume
from liverview.progress import Cancelled

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def few_files_for_workers(monkeypatch) -> dict[str, int]:
    """Workers for any folder, on two processes even on a one-core machine; counts the items handed
    to them (so that a test cannot pass by never using them)."""
    monkeypatch.setattr(series_module, "MIN_FILES_FOR_WORKERS", 8)
    monkeypatch.setattr(series_module, "HEADER_CHUNK", 5)
    monkeypatch.setattr(volume_module, "MIN_FRAMES_FOR_WORKERS", 4)
    monkeypatch.setenv("LIVERVIEW_WORKERS", "2")
    handed = {"items": 0}

    def counting(fn, items, *args, **kwargs):
        def count(items):
            for item in items:
                handed["items"] += 1
                yield item
        return map_in_order(fn, count(items), *args, **kwargs)

    monkeypatch.setattr(series_module, "map_in_order", counting)
    monkeypatch.setattr(volume_module, "map_in_order", counting)
    return handed


def _plain_scan(scan) -> object:
    def frames(info):
        return [(f.path, f.frame, f.position, f.sop_instance_uid) for f in info.frames]
    return ([(s.key, s.n_images, s.warnings, frames(s)) for s in scan.series],
            [dataclasses.astuple(s) for s in scan.skipped], scan.n_files)


def _scan(paths, monkeypatch, workers: str):
    monkeypatch.setenv("LIVERVIEW_WORKERS", workers)
    reports: list[tuple[float, str]] = []
    scan = scan_paths(paths, progress=lambda f, m: reports.append((f, m)))
    return scan, reports


def test_scan_on_workers_matches_the_sequential_scan(corpus_dir, crlm_dir, few_files_for_workers, monkeypatch):
    paths = [corpus_dir, crlm_dir]
    parallel, parallel_reports = _scan(paths, monkeypatch, "2")
    candidates = len(collect_files(paths).paths)
    assert few_files_for_workers["items"] == -(-candidates // 5)  # every chunk of 5 files
    sequential, sequential_reports = _scan(paths, monkeypatch, "1")
    assert _plain_scan(parallel) == _plain_scan(sequential)
    assert parallel_reports == sequential_reports
    assert len(parallel.series) > 10 and len(parallel.skipped) > 10


def test_scan_on_workers_can_be_cancelled(crlm_dir, few_files_for_workers):
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        scan_paths(crlm_dir, should_stop=stop)


def test_partial_results_fill_as_the_scan_goes(crlm_dir, monkeypatch):
    monkeypatch.setattr(series_module, "PARTIAL_EVERY_S", -1.0)  # after every file
    partial: list[int] = []
    scan = scan_paths(crlm_dir, on_partial=lambda result: partial.append(sum(s.n_images for s in result.series)))
    assert partial == list(range(1, 41))  # one more image each time, the complete result last
    assert scan.series[0].n_images == 41


@pytest.fixture
def rle_series(tmp_path, crlm_dir) -> Path:
    """20 slices of the real CT, RLE lossless; slice 5 has its pixel data cut short."""
    folder = tmp_path / "rle"
    folder.mkdir()
    for index, source in enumerate(sorted(crlm_dir.glob("*.dcm"))[10:30]):
        ds = pydicom.dcmread(source)
        ds.compress(RLELossless)
        if index == 5:
            ds.PixelData = ds.PixelData[:len(ds.PixelData) // 3] + b"\x00\x00"
        ds.save_as(folder / source.name)
    return folder


def _load(folder: Path, monkeypatch, workers: str):
    monkeypatch.setenv("LIVERVIEW_WORKERS", workers)
    info = scan_paths(folder).series[0]
    order: list[int] = []
    reports: list[tuple[float, str]] = []
    volume = fill_volume(allocate_volume(info), progress=lambda f, m: reports.append((f, m)),
                         on_slice=lambda v, z: order.append(z))
    return volume, order, reports


def _ring_files() -> set[str]:
    return {name for name in os.listdir(frame_slots.SHM_DIR) if name.startswith(frame_slots.PREFIX)}


@pytest.fixture(params=["shared slots", "pipe"])
def hand_over(request, monkeypatch) -> str:
    """Decoded frames come back through the shared ring (where /dev/shm exists) or the pool's pipe."""
    if request.param == "pipe":
        monkeypatch.setattr(volume_module, "open_slots", lambda *args: None)
    else:
        probe = frame_slots.open_slots(1, (2, 2))
        if probe is None:
            pytest.fail("no shared frame slots on this machine: /dev/shm is missing or full")
        probe.close()
    opened: list[frame_slots.FrameSlots] = []
    real_open = volume_module.open_slots

    def counting(*args):
        slots = real_open(*args)
        if slots is not None:
            opened.append(slots)
        return slots

    monkeypatch.setattr(volume_module, "open_slots", counting)
    yield request.param
    assert (len(opened) > 0) == (request.param == "shared slots")


def test_compressed_series_decoded_on_workers_matches_the_sequential_load(rle_series, few_files_for_workers,
                                                                          hand_over, monkeypatch):
    rings_before = _ring_files()
    parallel, parallel_order, parallel_reports = _load(rle_series, monkeypatch, "2")
    assert _ring_files() == rings_before  # the ring (5 slots for 19 frames, reused) is removed after the load
    assert few_files_for_workers["items"] == 4 + 19  # 4 chunks of headers, every frame but the middle one
    sequential, sequential_order, sequential_reports = _load(rle_series, monkeypatch, "1")
    assert np.array_equal(parallel.array, sequential.array)
    assert parallel_order == sequential_order and parallel_order[0] == 10
    assert parallel_reports == sequential_reports
    assert parallel.failed == sequential.failed and len(parallel.failed) == 1
    assert parallel.warnings == sequential.warnings
    assert np.array_equal(parallel.loaded, sequential.loaded) and parallel.loaded.sum() == 19


def test_the_ring_of_a_killed_load_is_removed_by_the_next_one(rle_series, few_files_for_workers, monkeypatch,
                                                               tmp_path):
    """A load killed with SIGKILL runs no clean-up: its ring stayed in /dev/shm (memory) until reboot."""
    code = ("import os, signal, sys\n"
            "from liverview.io import volume\n"
            "from liverview.io.series import scan_paths\n"
            "volume.MIN_FRAMES_FOR_WORKERS = 4\n"
            "info = scan_paths(sys.argv[1]).series[0]\n"
            "volume.fill_volume(volume.allocate_volume(info), "
            "on_slice=lambda v, z: z != info.n_images // 2 and os.kill(os.getpid(), signal.SIGKILL))\n")
    script = tmp_path / "killed_load.py"
    script.write_text(code)
    before = _ring_files()
    monkeypatch.setenv("LIVERVIEW_WORKERS", "2")
    run = subprocess.run([sys.executable, str(script), str(rle_series)], cwd=REPO, timeout=120)
    assert run.returncode == -9
    left = _ring_files() - before
    assert len(left) == 1  # what the killed load left behind
    _load(rle_series, monkeypatch, "2")
    assert not (_ring_files() & left)


def test_compressed_load_on_workers_can_be_cancelled(rle_series, few_files_for_workers, hand_over):
    info = scan_paths(rle_series).series[0]
    seen: list[int] = []
    rings_before = _ring_files()
    with pytest.raises(Cancelled):
        fill_volume(allocate_volume(info), should_stop=lambda: len(seen) >= 3, on_slice=lambda v, z: seen.append(z))
    assert len(seen) == 3
    assert _ring_files() == rings_before


def test_ordinary_folder_is_scanned_and_loaded_without_importing_pydicom(crlm_dir):
    """pydicom takes about a tenth of a second to import; the lean path must not need it, nor do files
    given by name (each is asked whether it is a DICOMDIR)."""
    files = [str(path) for path in sorted(crlm_dir.glob("*.dcm"))[:5]]
    code = ("import sys\n"
            "from liverview.imaging import inspect_cli\n"
            "from liverview.io import load_series, scan_paths\n"
            f"volume = load_series(scan_paths({str(crlm_dir)!r}).series[0])\n"
            "assert volume.loaded.all()\n"
            f"assert scan_paths({files!r}).series[0].n_images == 5\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydicom', 'PySide6', 'torch')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert out.strip() == "[]"


def test_jpeg_ls_ct_is_decoded_without_importing_the_jpeg_ls_package(crlm_dir, tmp_path):
    """Importing the `jpeg_ls` package looks its version up among the installed distributions (10 ms before
    a JPEG-LS series' workers start); its extension module decodes the same values. A pyjpegls laid out
    otherwise falls back to the package, and this test says so."""
    from pydicom.uid import JPEGLSLossless

    source = sorted(crlm_dir.glob("*.dcm"))[20]
    from liverview.io import read_slice

    expected = read_slice(scan_paths(source).series[0], 0)
    ds = pydicom.dcmread(source)
    ds.compress(JPEGLSLossless)
    (tmp_path / "jpeg-ls").mkdir()
    ds.save_as(tmp_path / "jpeg-ls" / source.name)
    code = ("import sys\n"
            "import numpy as np\n"
            "from liverview.io import read_slice, scan_paths\n"
            f"np.save(sys.argv[1], read_slice(scan_paths({str(tmp_path / 'jpeg-ls')!r}).series[0], 0))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jpeg_ls', '_CharLS', 'pydicom')))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "slice.npy")], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert out.strip() == "['_CharLS']"
    assert np.array_equal(np.load(tmp_path / "slice.npy"), expected)


def test_workers_run_below_the_window_priority(few_files_for_workers):
    """Decoding the rest of a series must not take the CPU from the window painting its first slice."""
    if not hasattr(os, "nice"):
        pytest.skip("process priority is POSIX-only")
    assert all(n >= os.nice(0) + WORKER_NICENESS for n in map_in_order(_niceness, range(4)))


def _niceness(_: int) -> int:
    return os.nice(0)


_OWNER = r"""
import os, sys, time
os.environ["LIVERVIEW_WORKERS"] = "2"
from liverview.io import process_pool
if sys.argv[1] == "threads":
    process_pool.declare_threads_outside_python()
print(" ".join(str(pid) for pid in set(process_pool.map_in_order(process_pool.worker_pid, range(8)))), flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("owner_kind", ["plain", "threads"])
def test_workers_do_not_outlive_a_killed_owner(owner_kind):
    """kill -9 of the app (walkthrough step 8) must not leave its worker processes running for ever, whether
    they were forked from it or (a process with Qt's threads) made by a fork server."""
    import signal
    import time

    owner = subprocess.Popen([sys.executable, "-c", _OWNER, owner_kind], stdout=subprocess.PIPE, text=True,
                             cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)})
    workers = [int(pid) for pid in owner.stdout.readline().split()]
    assert workers and all(_alive(pid) for pid in workers)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left


_EXITING_OWNER = r"""
import os, sys, time
os.environ["LIVERVIEW_WORKERS"] = "2"
from liverview.io import process_pool
print(" ".join(str(pid) for pid in set(process_pool.map_in_order(process_pool.worker_pid, range(8)))), flush=True)
os._exit(0)
"""


def test_workers_do_not_outlive_an_owner_that_exited_before_it_was_reaped():
    """An owner that exited without stopping its workers is a zombie until its parent reaps it, and a
    zombie still answers signal 0: the workers waited for ever, holding the pipe the parent read."""
    import time

    owner = subprocess.Popen([sys.executable, "-c", _EXITING_OWNER], stdout=subprocess.PIPE, text=True,
                             cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        workers = [int(pid) for pid in owner.stdout.readline().split()]
        assert workers
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [pid for pid in workers if _alive(pid)]
        for pid in left:
            os.kill(pid, 9)
        assert not left
    finally:
        owner.wait()


def test_liverview_inspect_leaves_no_worker_holding_its_output(rle_series):
    """`liverview-inspect` ends without the interpreter's teardown; its workers, which share its stdout,
    are stopped first: a caller that reads the output to its end (the benchmark) waited for them."""
    env = {**os.environ, "LIVERVIEW_WORKERS": "2"}
    result = subprocess.run([sys.executable, "-m", "liverview.imaging.inspect_cli", str(rle_series), "--json", "--load"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["series"][0]["n_images"] == 20


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_process_that_runs_threads_outside_python_does_not_fork_its_workers(monkeypatch):
    """Qt's threads are not in threading.enumerate(): the GUI says it runs them, and forking (which would
    copy a lock one of them holds) is then never used."""
    from liverview.io import process_pool

    monkeypatch.setattr(process_pool, "_threads_outside_python", False)
    monkeypatch.setattr(process_pool.threading, "active_count", lambda: 1)
    if "fork" in __import__("multiprocessing").get_all_start_methods():
        assert process_pool._context().get_start_method() == "fork"
    process_pool.declare_threads_outside_python()
    assert process_pool._context().get_start_method() in ("forkserver", "spawn")


def test_orphaned_rings_go_and_live_ones_stay(tmp_path):
    """What the app's start (and every compressed load) removes: rings whose owner process is gone."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = Path(frame_slots.SHM_DIR) / f"{frame_slots.PREFIX}{int(dead.stdout)}-test"
    live = Path(frame_slots.SHM_DIR) / f"{frame_slots.PREFIX}{os.getpid()}-test"
    for ring in (orphan, live):
        ring.write_bytes(b"\0" * 8)
    try:
        assert orphan.name in frame_slots.remove_orphaned_rings()
        assert not orphan.exists() and live.exists()
    finally:
        live.unlink()
