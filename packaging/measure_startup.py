"""Time from launching the built application to its window on screen (the `window shown` log line).

    xvfb-run -a .venv/bin/python packaging/measure_startup.py [--runs N] [--cold] [EXECUTABLE]

EXECUTABLE defaults to dist/liverview/liverview. Each run starts with an empty user data folder
(a first start), waits for the line in the log, then ends the app. --cold empties the page cache
before each run (Linux, root only), as after a reboot; otherwise later runs start from a warm cache.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MARKER = "window shown"


def drop_page_cache() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def time_to_window(executable: Path, timeout_s: float) -> float:
    with tempfile.TemporaryDirectory(prefix="liverview-startup-") as scratch:
        env = os.environ | {"LIVERVIEW_DATA_DIR": scratch, "XDG_CONFIG_HOME": str(Path(scratch) / "config"),
                            "QT_QPA_PLATFORM": "xcb"}
        log = Path(scratch) / "logs" / "liverview.log"
        start = time.perf_counter()
        process = subprocess.Popen([str(executable)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while time.perf_counter() - start < timeout_s:
                if log.is_file() and MARKER in log.read_text(encoding="utf-8", errors="replace"):
                    return time.perf_counter() - start
                if process.poll() is not None:
                    raise RuntimeError(f"{executable} exited with {process.returncode} before showing its window")
                time.sleep(0.02)
            raise TimeoutError(f"no window after {timeout_s:.0f} s")
        finally:
            process.terminate()
            process.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("executable", nargs="?", type=Path, default=Path("dist/liverview/liverview"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="empty the page cache before each run (root)")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY"):
        parser.error("needs an X display: run it under xvfb-run -a")
    times = []
    for run in range(args.runs):
        if args.cold:
            drop_page_cache()
        times.append(time_to_window(args.executable, args.timeout))
        print(f"run {run + 1}: {times[-1]:.2f} s to the window{' (cold cache)' if args.cold else ''}")
    print(f"median {statistics.median(times):.2f} s over {len(times)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
