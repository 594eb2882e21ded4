"""Import time of the app's and liverview-inspect's entry modules, and what heavy libraries they pull in
(run by hand). Each sample is a fresh ``python -X importtime -c "import MODULE"``; the median of the
cumulative times is reported.

Usage::

    .venv/bin/python benchmarks/bench_imports.py [--repeats 9] [--out benchmarks/results/imports.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import compile_sources, describe_machine  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "imports.json"
MODULES = {
    "liverview-inspect": "liverview.imaging.inspect_cli",
    "app window": "liverview.gui.main_window",
    "io": "liverview.io",
}
HEAVY = ("pydicom", "torch", "PySide6", "pyqtgraph", "cv2", "SimpleITK")


def import_sample(module: str) -> tuple[float, list[str]]:
    code = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "QT_QPA_PLATFORM": "offscreen"}, check=True)
    line = next(ln for ln in proc.stderr.splitlines() if ln.rstrip().endswith(f"| {module}"))
    return int(line.split("|")[1]) / 1e6, json.loads(proc.stdout.strip().replace("'", '"'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    compile_sources()
    results = {"benchmark": "import time (python -X importtime, cumulative, median)",
               "machine": describe_machine(("numpy", "pydicom", "PySide6")), "modules": {}}
    for name, module in MODULES.items():
        samples, heavy = [], []
        for _ in range(args.repeats):
            seconds, heavy = import_sample(module)
            samples.append(round(seconds, 4))
        median = statistics.median(samples)
        results["modules"][name] = {"module": module, "median_s": round(median, 4), "samples_s": samples,
                                    "heavy_libraries_imported": heavy}
        print(f"{name:18s} {median * 1000:6.0f} ms  imports {', '.join(heavy) or 'none of ' + '/'.join(HEAVY)}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
