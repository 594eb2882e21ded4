"""PACS retrieve benchmark: liverview's C-GET against DCMTK's getscu on the same local Orthanc in the
same run (the ratio is what to compare across machines), and the time from Retrieve in File → Query
PACS… to the first image on screen.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_pacs.py [--images 300] [--repeats 3]
        [--out benchmarks/results/pacs.json]

The study: the 41 real slices of ../shared/data/series/crlm-ct-1004 used cyclically as pixel sources
for N images (new UIDs, consecutive positions 1.25 mm apart), written once to a cache folder outside
the repository and uploaded to a fresh Orthanc (Debian's `orthanc`, started with TCP_NODELAY=1 as the
tests do). Each repeat alternates which tool goes first; every retrieve starts from an empty folder.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CRLM = REPO.parent / "shared" / "data" / "series" / "crlm-ct-1004" / "image"
sys.path.insert(0, str(REPO / "tests" / "net"))


def machine_info() -> dict:
    versions = {}
    for name in ("pydicom", "pynetdicom", "PySide6"):
        module = __import__(name)
        versions[name] = getattr(module, "__version__", "?")
    for tool, args in (("Orthanc", ["--version"]), ("getscu", ["--version"])):
        out = subprocess.run([tool, *args], capture_output=True, text=True).stdout.splitlines()
        versions[tool] = next((line.strip() for line in out if line.strip()), "?")
    cpu_model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), "")
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "liverview"], capture_output=True,
                                text=True).stdout.strip())
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "platform": platform.platform(),
            "machine": platform.machine(), "cpu_model": cpu_model, "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)), "python": sys.version.split()[0],
            "python_executable": sys.executable, "versions": versions, "git_head": git,
            "liverview_worktree_dirty": dirty}


def make_study(n: int) -> Path:
    import pydicom
    from pydicom.uid import generate_uid

    folder = Path(os.environ.get("XDG_CACHE_HOME", "/tmp")) / "liverview-bench" / f"pacs-{n}-v1"
    if folder.is_dir() and len(list(folder.glob("*.dcm"))) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    partial = folder.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    sources = sorted(CRLM.glob("*.dcm"))
    study, series = generate_uid(), generate_uid()
    for i in range(n):
        ds = pydicom.dcmread(sources[i % len(sources)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName, ds.PatientID = "BENCH^PACS", "BENCH-PACS"
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], -1.25 * i]
        ds.save_as(partial / f"{i:04d}.dcm")
    os.replace(partial, folder)
    return folder


def time_liverview(node, study_uid: str, series, work: Path) -> float:
    from liverview.net.cache import RetrieveCache
    from liverview.net.retrieve import retrieve_study

    cache = RetrieveCache(work / "liverview-cache")
    start = time.perf_counter()
    result = retrieve_study(node, study_uid, cache, series=series)
    elapsed = time.perf_counter() - start
    assert result.n_images == series[0].n_instances
    shutil.rmtree(work / "liverview-cache")
    return elapsed


def time_getscu(server, study_uid: str, series_uid: str, n: int, work: Path) -> float:
    out = work / "getscu"
    out.mkdir()
    command = ["getscu", "-aet", "LIVERVIEW", "-aec", "ORTHANC", "127.0.0.1", str(server.dicom_port), "-S",
               "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study_uid}",
               "-k", f"SeriesInstanceUID={series_uid}", "-od", str(out)]
    start = time.perf_counter()
    # Debian's DCMTK (getscu as Orthanc) waits for Nagle's algorithm on each sub-operation without it.
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "TCP_NODELAY": "1"})
    elapsed = time.perf_counter() - start
    assert len(list(out.iterdir())) == n, "getscu did not store every image"
    shutil.rmtree(out)
    return elapsed


def spin(app, until) -> None:
    """Let the event loop run until `until()`; the short sleep keeps this loop from holding the GIL the way
    an idle application's event loop would not."""
    while not until():
        app.processEvents()
        time.sleep(0.002)


def time_to_first_image(node, repeats: int, work: Path) -> list[float]:
    """Retrieve pressed in the Query PACS dialog → the window shows the series' first (middle) slice."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from liverview.gui.main_window import MainWindow
    from liverview.gui.pacs_nodes import save_nodes
    from liverview.net.query import DatePreset

    app = QApplication.instance() or QApplication([])
    times = []
    for i in range(repeats):
        os.environ["LIVERVIEW_DATA_DIR"] = str(work / f"data-{i}")  # an empty cache each time
        times.append(_retrieve_once(app, MainWindow, QSettings, save_nodes, DatePreset, node, work / f"settings-{i}.ini"))
    return times


def _retrieve_once(app, main_window, qsettings, save_nodes, date_preset, node, settings_file: Path) -> float:
    """One Retrieve in a fresh window: seconds from the click to the first image on screen."""
    settings = qsettings(str(settings_file), qsettings.IniFormat)
    settings.setValue("model/preload", False)
    save_nodes(settings, [node])
    window = main_window(settings)
    window.show()
    dialog = window.pacs.show_query()
    dialog.patient_name.setText("BENCH*")
    dialog.date.setCurrentIndex(dialog.date.findData(date_preset.ANY))
    task = dialog.search()
    spin(app, lambda: not task.is_running() and dialog.tree.topLevelItemCount() > 0)
    start = time.perf_counter()
    dialog.retrieve(dialog.tree.topLevelItem(0))
    spin(app, lambda: window.volume is not None and window.viewer.views[0].image.image is not None)
    seconds = time.perf_counter() - start
    spin(app, lambda: not dialog.retrieve_task.is_running() and not (window.load_task and window.load_task.is_running()))
    window.close()
    app.processEvents()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pacs.json")
    args = parser.parse_args(argv)

    from orthanc_server import Orthanc, node_for

    from liverview.net.query import StudyQuery, find_series, find_studies

    study_dir = make_study(args.images)
    work = Path(tempfile.mkdtemp(prefix="liverview-bench-pacs-"))
    server = Orthanc(work / "orthanc").start()
    try:
        server.upload(sorted(study_dir.glob("*.dcm")))
        node = node_for(server).with_changes(name="bench")
        (study,) = find_studies(node, StudyQuery(patient_id="BENCH-PACS"))
        series = find_series(node, study.study_uid)
        liverview_s, getscu_s = [], []
        for repeat in range(args.repeats):
            order = ("liverview", "getscu") if repeat % 2 == 0 else ("getscu", "liverview")
            for tool in order:
                if tool == "liverview":
                    liverview_s.append(time_liverview(node, study.study_uid, series, work))
                else:
                    getscu_s.append(time_getscu(server, study.study_uid, series[0].series_uid, args.images, work))
        first_image_s = time_to_first_image(node, args.repeats, work)
    finally:
        server.stop(graceful=False)
        shutil.rmtree(work, ignore_errors=True)

    ratios = [lv / gs for lv, gs in zip(liverview_s, getscu_s, strict=True)]
    result = {
        "benchmark": "PACS retrieve: liverview C-GET vs DCMTK getscu, and Retrieve → first image on screen",
        "machine": machine_info(),
        "parameters": {"images": args.images, "repeats": args.repeats, "pacs": "Orthanc on 127.0.0.1, TCP_NODELAY=1",
                       "image_bytes": (study_dir / "0000.dcm").stat().st_size},
        "method": {"liverview": "liverview.net.retrieve.retrieve_study (C-GET of the series) into an empty cache",
                   "getscu": "TCP_NODELAY=1 getscu -S -k QueryRetrieveLevel=SERIES … -od EMPTY_DIR (a new process "
                             "each time)",
                   "first_image": "QueryDialog.retrieve pressed → the main window's axial view holds an image "
                                  "(the series is opened once complete, middle slice first)"},
        "results": {"liverview_s": liverview_s, "getscu_s": getscu_s, "ratio_liverview_to_getscu": ratios,
                    "median_ratio": statistics.median(ratios), "median_liverview_s": statistics.median(liverview_s),
                    "median_getscu_s": statistics.median(getscu_s), "first_image_s": first_image_s,
                    "median_first_image_s": statistics.median(first_image_s)},
        "targets": {"ratio_at_most": 1.5, "first_image_at_most_s": 5.0},
    }
    result["pass"] = {"ratio": result["results"]["median_ratio"] <= 1.5,
                      "first_image": result["results"]["median_first_image_s"] <= 5.0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.images} images: liverview {result['results']['median_liverview_s']:.2f} s, getscu "
          f"{result['results']['median_getscu_s']:.2f} s, ratio {result['results']['median_ratio']:.2f}; "
          f"Retrieve → first image {result['results']['median_first_image_s']:.2f} s  → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
