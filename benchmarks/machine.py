"""One machine description for every benchmark's results JSON (the "machine" object).

Fields: date (UTC, ISO 8601), platform, machine (architecture), cpu_model, cpu_count, cpu_affinity
(cores this process may use), load_average (1/5/15 min at the time of the run: the machines are
shared, so timings are comparable only within one run), python, python_executable, versions (of the
libraries named by the benchmark), git_head, liverview_worktree_dirty, shared_machine_note.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SHARED_NOTE = ("2 cores shared with other engineers' processes: compare only ratios measured in the same "
               "run (interleaved repeats, medians), never absolute times across runs")


def describe_machine(libraries: Iterable[str] = ("numpy", "pydicom")) -> dict:
    """The "machine" object of a results JSON; `libraries` are imported to record their versions."""
    versions = {}
    for name in libraries:
        try:
            module = importlib.import_module(name)
            version = getattr(module, "__version__", None)
            versions[name] = version if version is not None else str(getattr(module, "Version", lambda: "?")())
        except Exception as exc:  # noqa: BLE001 - a missing optional library is recorded, not fatal
            versions[name] = f"unavailable ({type(exc).__name__})"
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "load_average": load,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "versions": versions,
        "git_head": _git("rev-parse", "--short", "HEAD"),
        "liverview_worktree_dirty": bool(_git("status", "--porcelain", "liverview")),
        "shared_machine_note": SHARED_NOTE,
    }


def compile_sources() -> None:
    """Write liverview's bytecode before whole processes are timed, as an installed copy has it: with
    PYTHONDONTWRITEBYTECODE set (as on the CI and development machines), a module edited since its
    .pyc was written would otherwise be compiled again by every timed process."""
    import compileall

    compileall.compile_dir(str(REPO / "liverview"), quiet=1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
