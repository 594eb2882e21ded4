"""From "Open folder" to pixels in the real window (offscreen Qt), run by hand.

For each folder of `bench_open_study.py` (generated there), in a fresh process per repeat:

* ``first_partial_s``: open -> the series browser first lists series while the folder is still read;
* ``headers_s``: open -> the complete scan reaches the window (every header known);
* ``middle_slice_after_headers_s``: complete scan -> the middle slice of the first CT series is set on
  the viewer and painted. Target: <= 0.3 s, compressed or not.

A screenshot of the window at the first partial result is saved (``--screenshot``) for a look.

Usage::

    .venv/bin/python benchmarks/bench_first_slice.py [--cases index,load,j2k] [--repeats 3]
                                                     [--out benchmarks/results/first_slice.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_open_study import ensure_case_data  # noqa: E402
from machine import compile_sources, describe_machine  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "first_slice.json"
TARGET_S = 0.3

WINDOW = r"""
import json, os, sys, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from liverview.gui.main_window import MainWindow
from liverview.gui.theme import apply_dark_theme
from liverview.io.series import ScanResult

folder, screenshot = sys.argv[1], sys.argv[2]
app = QApplication([])
apply_dark_theme(app)
window = MainWindow()
window.resize(1400, 900)
window.show()
app.processEvents()
times = {}
on_scan, show_volume = window._on_scan_partial, window._show_volume

def scan_item(item):
    on_scan(item)
    if isinstance(item, ScanResult):
        key = "first_partial_s" if not item.complete else "headers_s"
        if key not in times:
            times[key] = time.perf_counter() - t0
            if key == "first_partial_s" and screenshot:
                app.processEvents()
                window.grab().save(screenshot)

def shown(volume):
    show_volume(volume)
    window.viewer.repaint()
    if "shown_s" not in times:
        times["shown_s"] = time.perf_counter() - t0
        times["compressed"] = volume.info.frames[0].header.pixel_offset is None
        QTimer.singleShot(0, app.quit)

window._on_scan_partial, window._show_volume = scan_item, shown
t0 = time.perf_counter()
window.open_paths([folder])
QTimer.singleShot(60000, app.quit)
app.exec()
window.cancel_tasks()
print(json.dumps(times), flush=True)
"""


def run_once(folder: Path, screenshot: str) -> dict:
    with tempfile.TemporaryDirectory() as home:
        # The window's settings and data (annotation store, recent folders) stay out of the user's.
        env = {**os.environ, "PYTHONPATH": str(REPO), "QT_QPA_PLATFORM": "offscreen", "LIVERVIEW_DATA_DIR": home,
               "XDG_CONFIG_HOME": home}
        proc = subprocess.run([sys.executable, "-c", WINDOW, str(folder), screenshot], capture_output=True,
                              text=True, env=env, cwd=str(REPO), timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"window run failed ({proc.returncode}): {proc.stderr[-3000:]}")
    times = json.loads(lines[-1])
    times["middle_slice_after_headers_s"] = times["shown_s"] - times["headers_s"]
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="index,load,j2k")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--screenshot", default=str(REPO / "build" / "first_partial.png"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    compile_sources()
    Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
    results = {"benchmark": "open folder -> first series listed, headers known, middle slice shown (offscreen Qt)",
               "machine": describe_machine(("numpy", "pydicom", "PySide6")), "target_s": TARGET_S, "cases": {}}
    for case in args.cases.split(","):
        folder = ensure_case_data(case)
        if case != "index":
            folder = next(p for p in folder.rglob("series*") if p.is_dir())
        samples = [run_once(folder, args.screenshot if case == "index" and i == 0 else "")
                   for i in range(args.repeats)]
        latency = statistics.median(s["middle_slice_after_headers_s"] for s in samples)
        results["cases"][case] = {"folder": str(folder), "samples": samples,
                                  "median_middle_slice_after_headers_s": round(latency, 4),
                                  "median_headers_s": round(statistics.median(s["headers_s"] for s in samples), 4),
                                  "pass": latency <= TARGET_S}
        print(f"{case:6s} headers {results['cases'][case]['median_headers_s']:.3f} s, middle slice "
              f"{latency:.3f} s later ({'pass' if latency <= TARGET_S else 'MISS'})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
