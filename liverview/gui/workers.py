"""Run a core function (which takes `progress` and `should_stop`) on a QThread.

The core stays Qt-free; here it is wrapped so results reach widgets only through queued signals.
"""
from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from liverview.progress import Cancelled

log = logging.getLogger(__name__)

#: Started threads, referenced until they finish: Qt aborts the process when a QThread object is
#: destroyed while its thread runs, which a dropped (unclosed) window or task would otherwise cause.
_RUNNING: set[QThread] = set()


def start_thread(thread: QThread) -> None:
    _RUNNING.add(thread)
    thread.finished.connect(lambda: _RUNNING.discard(thread))
    thread.start()


@atexit.register
def _wait_for_threads() -> None:
    for thread in list(_RUNNING):
        thread.quit()
        thread.wait(5000)


class _Runner(QObject):
    progress = Signal(float, str)
    partial = Signal(object)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, fn: Callable[..., Any], stop: threading.Event) -> None:
        super().__init__()
        self._fn = fn
        self._stop = stop

    def run(self) -> None:
        try:
            result = self._fn(progress=self.progress.emit, should_stop=self._stop.is_set, report=self.partial.emit)
        except Cancelled:
            self.cancelled.emit()
        except Exception as exc:  # noqa: BLE001 - every failure reaches the user as a message
            # exc_info: the traceback goes to the log file; the console's formatter keeps the one line.
            log.error("background task failed: %s", failure_sentence(exc), exc_info=True)
            self.failed.emit(failure_sentence(exc))
        else:
            if self._stop.is_set():
                self.cancelled.emit()
            else:
                self.finished.emit(result)


#: Exceptions that mean a defect in liverview rather than a reason to tell: shown with their class
#: name, which a support person can search for (the log has the traceback).
_DEFECTS = (LookupError, AttributeError, TypeError, AssertionError, NameError)


def failure_sentence(exc: BaseException) -> str:
    """Why a task failed, as a reader reads it: the reason without the exception's class name ("No such
    file or directory: '/proc/nope'", not "FileNotFoundError: [Errno 2] ..."); a defect keeps its class
    name, and an exception that says nothing is named by its class."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    if isinstance(exc, OSError) and isinstance(exc.__cause__, OSError):
        # pydicom re-raises a failed write as a new OSError with a whole traceback in its message.
        return failure_sentence(exc.__cause__)
    text = str(exc)
    if not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}" if isinstance(exc, _DEFECTS) else text


class BackgroundTask(QObject):
    """One job on its own thread.

    `fn(progress, should_stop, report)` runs off the GUI thread; `report(obj)` publishes intermediate
    results (e.g. the first slice of a volume) as `partial`.
    """

    progress = Signal(float, str)
    partial = Signal(object)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    done = Signal()

    def __init__(self, fn: Callable[..., Any], parent: QObject | None = None, name: str = "") -> None:
        super().__init__(parent)
        #: What the task does ("scan", "load", "export", ...), for the session's task registry.
        self.name = name
        self._stop = threading.Event()
        self._thread = QThread()
        self._runner = _Runner(fn, self._stop)
        self._runner.moveToThread(self._thread)
        self._thread.started.connect(self._runner.run)
        for name in ("progress", "partial", "finished", "failed", "cancelled"):
            getattr(self._runner, name).connect(getattr(self, name))
        for name in ("finished", "failed", "cancelled"):
            getattr(self._runner, name).connect(self._thread.quit)
        self._thread.finished.connect(self.done)

    def start(self) -> None:
        start_thread(self._thread)

    def cancel(self) -> None:
        self._stop.set()

    def is_running(self) -> bool:
        return self._thread.isRunning()

    def wait(self, msecs: int = 5000) -> bool:
        return self._thread.wait(msecs)
