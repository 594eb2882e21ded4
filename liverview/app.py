"""`liverview [PATH ...] [--demo] [--self-test [--out FILE]]`: start the desktop application.

Start-up is where a double-clicked application dies without a word: no terminal shows stderr. So
everything that goes wrong here is written to the log file in the user data folder
(`user_data_dir()/logs/liverview.log`) and, once Qt runs, shown in a dialog: a missing display is
detected before Qt would abort, Qt's own fatal messages reach the log, unreadable settings are set
aside, and uncaught exceptions go through `ErrorReporter` instead of vanishing.

`--self-test` is the check a support person asks a user to run: offscreen, it opens the demo study,
classifies one lesion with the bundled model and writes a JSON report (exit 0 when all went well).
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import platform
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from liverview.log_setup import ConsoleFormatter, OwnWarningsOnly, WithholdQuoted
from liverview import __version__
from liverview.paths import default_model_path, resource_path, user_data_dir

log = logging.getLogger("liverview.app")

EXIT_FAILURE = 1
EXIT_NO_DISPLAY = 2
FIRST_RUN_KEY = "app/first_run_done"
ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)
# Qt platforms that need no X11 or Wayland session.
HEADLESS_PLATFORMS = {"offscreen", "minimal", "minimalegl", "vnc", "eglfs", "linuxfb", "vkkhrdisplay"}
SELF_TEST_TIMEOUT_S = 300.0
#: Set to a model bundle folder to make --self-test use it instead of the bundled model.
MODEL_OVERRIDE_ENV = "LIVERVIEW_MODEL"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="liverview", description="Liver CT/MR viewer and lesion annotation",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  liverview                        the window, with Open study… and the demo studies\n"
               "  liverview /media/cdrom           open a CD, folder, zip or DICOMDIR\n"
               "  liverview --self-test            the check a support person asks for: prints OK, the model "
               "and the device")
    parser.add_argument("paths", nargs="*", help="DICOM folder(s), file(s), zip or DICOMDIR to open")
    parser.add_argument("--demo", action="store_true", help="open the bundled synthetic demo study")
    parser.add_argument("--self-test", action="store_true",
                        help="offscreen: open the demo study, classify one lesion, write a JSON report, exit")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="--self-test: write the JSON report here ('-' for stdout; default: "
                             "self-test/self-test.json in the user data folder)")
    parser.add_argument("--version", action="version", version=f"liverview {__version__}")
    return parser.parse_args(argv)


# -- logging and error reporting -----------------------------------------------------------------
def log_file_path() -> Path:
    return user_data_dir() / "logs" / "liverview.log"


def setup_logging() -> tuple[Path | None, Callable[[], None]]:
    """Log to the user data folder (and stderr when there is one). Returns the log file (None when it
    cannot be written) and a function that removes the handlers again."""
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(logging.INFO)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = []
    console: logging.Handler | None = None
    # A windowed executable on Windows/macOS has no stderr at all (sys.stderr is None).
    if sys.stderr is not None:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(ConsoleFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(console)
    path: Path | None = None
    problem = ""
    try:
        path = log_file_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8"))
    except OSError as exc:
        problem, path = f"cannot write the log file ({exc}); logging to stderr only", None
    crash_file = None
    if path is not None and not faulthandler.is_enabled():
        # A crash in native code (Qt, torch) leaves no Python traceback in the log; this file gets one.
        crash_file = open(path.with_name("crash.log"), "a", encoding="utf-8")  # noqa: SIM115 - lives until remove()
        faulthandler.enable(crash_file)
    if console is not None and path is not None:
        console.addFilter(OwnWarningsOnly())  # other libraries' warnings: the log file has them
    for handler in handlers:
        if handler.formatter is None:
            handler.setFormatter(formatter)
        handler.addFilter(WithholdQuoted())
        root.addHandler(handler)
    logging.captureWarnings(True)
    if problem:
        log.warning("%s", problem)

    def remove() -> None:
        logging.captureWarnings(False)
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        if crash_file is not None:
            faulthandler.disable()
            crash_file.close()
        root.setLevel(previous_level)

    return path, remove


def show_error(title: str, text: str, log_file: Path | None, *, critical: bool = True) -> None:
    """A message box (plain text) saying what went wrong and where the details are."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QMessageBox

    if log_file is not None:
        text += f"\n\nDetails are in the log file:\n{log_file}"
    box = QMessageBox(QMessageBox.Critical if critical else QMessageBox.Warning, title, text)
    box.setTextFormat(Qt.PlainText)
    box.exec()


class ErrorReporter:
    """sys.excepthook/threading.excepthook: every uncaught exception goes to the log and, in the
    interactive app, to a dialog (one at a time; further ones while it is open are only logged).
    `--self-test` collects them instead (nobody is there to click a dialog away)."""

    def __init__(self, log_file: Path | None, interactive: bool) -> None:
        self.log_file = log_file
        self.interactive = interactive
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._showing = False

    def __call__(self, exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        log.critical("uncaught exception:\n%s", "".join(traceback.format_exception(exc_type, exc, tb)).rstrip())
        summary = f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__
        self.errors.append(summary)
        if self.interactive and not self._showing and self._on_gui_thread():
            self._showing = True
            try:
                show_error("liverview: unexpected error",
                           f"Something went wrong and was not handled:\n{summary}\n\nYour annotations are saved "
                           "automatically; if liverview misbehaves from now on, restart it.", self.log_file)
            finally:
                self._showing = False

    def warn(self, title: str, text: str) -> None:
        """A problem liverview works around (it starts anyway): logged, and shown unless self-testing."""
        log.warning("%s: %s", title, text)
        self.warnings.append(f"{title}: {text}")
        if self.interactive:
            show_error(title, text, self.log_file, critical=False)

    @staticmethod
    def _on_gui_thread() -> bool:
        if "PySide6.QtWidgets" not in sys.modules:
            return False  # Qt not started yet: no dialog possible
        from PySide6.QtCore import QThread
        from PySide6.QtWidgets import QApplication

        app = QApplication.instance()
        return app is not None and QThread.currentThread() is app.thread()

    def _thread_hook(self, args: threading.ExceptHookArgs) -> None:
        log.critical("uncaught exception in thread %s:\n%s", getattr(args.thread, "name", "?"),
                     "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)).rstrip())
        self.errors.append(f"{args.exc_type.__name__}: {args.exc_value}")

    def install(self) -> Callable[[], None]:
        previous, previous_thread = sys.excepthook, threading.excepthook
        sys.excepthook, threading.excepthook = self, self._thread_hook

        def restore() -> None:
            sys.excepthook, threading.excepthook = previous, previous_thread

        return restore


def missing_display(environ: Mapping[str, str] = os.environ, system: str = sys.platform) -> str | None:
    """Why no window can be opened here, or None. Qt aborts in C++ when its platform plugin finds no
    display, before Python can report anything, so this is checked first (X11/Wayland systems only)."""
    if not system.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return None
    requested = {name.split(":")[0].strip() for name in environ.get("QT_QPA_PLATFORM", "").split(";")}
    if requested & HEADLESS_PLATFORMS or environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"):
        return None
    return ("no display: neither DISPLAY nor WAYLAND_DISPLAY is set. liverview needs a graphical session; "
            "start it from the desktop, or use `liverview --self-test` for a check without a display.")


def qt_message_handler(mode: Any, context: Any, message: str) -> None:
    """Qt's warnings into the log. A fatal message is followed by abort(): log it with a hint first."""
    from PySide6.QtCore import QtMsgType

    qt_log = logging.getLogger("liverview.qt")
    if mode == QtMsgType.QtFatalMsg:
        qt_log.critical("Qt cannot continue: %s (for the platform plugin's details run with QT_DEBUG_PLUGINS=1; "
                        "on Linux the xcb plugin needs libxcb-cursor0 and an X11 or Wayland session)", message)
        for handler in logging.getLogger().handlers:
            handler.flush()
    elif mode in (QtMsgType.QtCriticalMsg, QtMsgType.QtWarningMsg):
        qt_log.warning("%s", message)
    else:
        qt_log.debug("%s", message)


# -- the application -----------------------------------------------------------------------------
def app_icon() -> Any:
    from PySide6.QtGui import QIcon

    icon = QIcon()
    for size in ICON_SIZES:
        path = resource_path("icons", f"liverview-{size}.png")
        if path.is_file():
            icon.addFile(str(path))
    return icon


def create_application() -> Any:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("liverview")
    app.setApplicationName("liverview")
    app.setApplicationVersion(__version__)
    # Wayland and some X11 docks match windows to liverview.desktop (and its icon) by this name.
    app.setDesktopFileName("liverview")
    app.setWindowIcon(app_icon())
    return app


def open_settings(reporter: ErrorReporter) -> Any:
    """The user's QSettings; a file Qt cannot parse is set aside (kept for support) and defaults used."""
    from PySide6.QtCore import QSettings

    settings = QSettings()
    settings.allKeys()  # Qt reads the file lazily; status() is only meaningful after a read
    if settings.status() == QSettings.NoError:
        return settings
    path = Path(settings.fileName())
    status = settings.status().name
    del settings
    kept = path.with_name(f"{path.name}.unreadable-{datetime.now():%Y%m%d-%H%M%S}")
    try:
        path.replace(kept)
        outcome = f"It was renamed to {kept.name}, and liverview starts with its default settings."
    except OSError as exc:
        outcome = f"It could not be set aside ({exc}); settings changed now may not be saved."
    reporter.warn("Settings could not be read", f"The settings file {path} cannot be read ({status}). {outcome}")
    return QSettings()


def show_splash(app: Any) -> Any:
    """Shown while the main window's modules load (the first start from a cold disk takes seconds)."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QColor, QPixmap
    from PySide6.QtWidgets import QSplashScreen

    splash = QSplashScreen(QPixmap(str(resource_path("icons", "liverview-256.png"))))
    splash.showMessage(f"liverview {__version__}", Qt.AlignBottom | Qt.AlignHCenter, QColor(220, 220, 220))
    splash.show()
    app.processEvents()
    return splash


def first_start(settings: Any) -> bool:
    """True on the first start with these settings (no study given: offer the demo); recorded at once."""
    first = not settings.value(FIRST_RUN_KEY, False, type=bool)
    settings.setValue(FIRST_RUN_KEY, True)
    return first


def offer_demo(window: Any) -> None:
    from PySide6.QtWidgets import QMessageBox

    answer = QMessageBox.question(
        window, "Welcome to liverview",
        "Open the demo study?\n\nIt is a synthetic abdominal CT (fictitious patient) with liver lesions to outline, "
        "label and classify yourself; their true classes are in its ground-truth.json (File → Import annotations). "
        "It is generated once into your user data folder and always there under File → Open demo study.",
        QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
    if answer == QMessageBox.Yes:
        window.open_demo()


def offer_last_study(window: Any) -> None:
    """After a restart or a crash: ask whether to reopen the study that was open."""
    from PySide6.QtWidgets import QMessageBox

    paths = window.last_study()
    answer = QMessageBox.question(window, "Reopen the last study?",
                                  f"Reopen the study that was open last time?\n\n{chr(10).join(paths)}",
                                  QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
    if answer == QMessageBox.Yes:
        window.open_paths(paths)


def close_on_terminate(window: Any) -> None:
    """SIGTERM (a logout, `kill`, a service manager) closes the window as the user would: the open
    annotations are saved and the worker processes stopped. Python runs signal handlers only between
    bytecodes, so a timer gives it a moment from Qt's event loop now and then."""
    import signal

    from PySide6.QtCore import QTimer

    if not hasattr(signal, "SIGTERM"):
        return
    signal.signal(signal.SIGTERM, lambda *_: QTimer.singleShot(0, window.close))
    ticker = QTimer(window)
    ticker.timeout.connect(lambda: None)
    ticker.start(500)


def run_gui(args: argparse.Namespace, reporter: ErrorReporter, started: float) -> int:
    from PySide6.QtCore import QTimer

    app = create_application()
    settings = open_settings(reporter)  # before the splash, which would cover its warning
    splash = None
    try:
        splash = show_splash(app)
        from liverview.gui.main_window import MainWindow
        from liverview.gui.theme import apply_dark_theme

        apply_dark_theme(app)
        window = MainWindow(settings)
        if window.has_saved_geometry():
            window.show()
        else:
            window.showMaximized()  # the first start uses the screen
        splash.finish(window)
    except Exception as exc:  # noqa: BLE001 - whatever stops the window must reach the user
        log.exception("liverview could not start")
        if splash is not None:
            splash.close()  # it stays on top and would hide the message
        show_error("liverview could not start", f"{type(exc).__name__}: {exc}", reporter.log_file)
        return EXIT_FAILURE
    from liverview.io.frame_slots import remove_orphaned_rings
    from liverview.io.unpack_folder import remove_stale_unpacks

    # Zips unpacked, and decoded-frame rings in /dev/shm, of a liverview that was killed stay until a later
    # start removes them (rings also go with the next compressed load, in any liverview process).
    QTimer.singleShot(0, remove_stale_unpacks)
    QTimer.singleShot(0, remove_orphaned_rings)
    close_on_terminate(window)
    # Runs once the event loop has painted the window: the start-up time a user sees.
    QTimer.singleShot(0, lambda: log.info("window shown %.2f s after start", time.perf_counter() - started))
    first_run = first_start(settings)
    if args.paths:
        window.open_paths(args.paths)
    elif args.demo:
        window.open_demo()
    elif first_run:
        QTimer.singleShot(0, lambda: offer_demo(window))
    elif window.last_study():
        QTimer.singleShot(0, lambda: offer_last_study(window))
    return app.exec()


# -- self-test -----------------------------------------------------------------------------------
class SelfTestError(Exception):
    pass


@contextmanager
def timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = round(time.perf_counter() - start, 3)


def wait_until(app: Any, condition: Callable[[], bool], failure: Callable[[], str | None], timeout_s: float) -> None:
    """Run the event loop until `condition()`; SelfTestError when `failure()` says why it cannot come."""
    from PySide6.QtCore import QEventLoop

    deadline = time.monotonic() + timeout_s
    while not condition():
        problem = failure()
        if problem:
            raise SelfTestError(problem)
        if time.monotonic() > deadline:
            raise SelfTestError(f"gave up after {timeout_s:.0f} s")
        app.processEvents(QEventLoop.AllEvents, 50)
        time.sleep(0.02)


def visible_message(window: Any) -> str | None:
    """The text of a message box the window shows (how it reports a failed open or load)."""
    from PySide6.QtWidgets import QMessageBox

    for box in window.findChildren(QMessageBox):
        if box.isVisible():
            return f"{box.windowTitle()}: {box.text()}"
    return None


def self_test_lesion(window: Any) -> Any:
    """The demo's first ground-truth lesion, read from the study's ground-truth file (the user's own
    annotations of the demo are left alone)."""
    from liverview.annotations.document import AnnotationDocument
    from liverview.paths import demo_study_dir
    from liverview.synth.demo import GROUND_TRUTH_NAME

    truth = AnnotationDocument.from_dict(json.loads((demo_study_dir() / GROUND_TRUTH_NAME).read_text("utf-8")))
    if truth.series_instance_uid != window.volume.series_uid:
        raise SelfTestError("the demo study's ground truth belongs to another series than the one opened")
    if not truth.lesions:
        raise SelfTestError("the demo study's ground truth holds no lesion")
    return truth.lesions[0]


def self_test_model(settings: Any) -> tuple[Path, str]:
    """The model the app would use, and where that choice comes from: $LIVERVIEW_MODEL, else the one
    the user loaded (File › Load model…, kept in the user's settings), else the bundled one."""
    if os.environ.get(MODEL_OVERRIDE_ENV):
        return Path(os.environ[MODEL_OVERRIDE_ENV]), f"${MODEL_OVERRIDE_ENV}"
    chosen = str(settings.value("model/path", "") or "")
    if chosen:
        return Path(chosen), "loaded in the app (File > Load model...)"
    return default_model_path(), "bundled"


def self_test_steps(result: dict[str, Any], reporter: ErrorReporter, settings_file: Path) -> None:
    """The self-test proper; fills `result` as it goes, so a failure still reports what worked."""
    timings = result["timings_s"]
    with timed(timings, "qt_start"):
        from PySide6 import __version__ as pyside_version
        from PySide6.QtCore import QSettings, qVersion

        app = create_application()
        result.update(qt_version=qVersion(), pyside_version=pyside_version)
    with timed(timings, "window"):
        from liverview.gui.main_window import MainWindow
        from liverview.gui.theme import apply_dark_theme

        apply_dark_theme(app)
        # A throwaway settings file: the check must not move the user's window or last folder.
        window = MainWindow(QSettings(str(settings_file), QSettings.IniFormat))
        window.show()
    try:
        with timed(timings, "open_demo"):
            window.open_demo()
            wait_until(app, lambda: window.volume is not None and bool(window.volume.loaded.all())
                       and not window.progress.isVisible(),
                       lambda: visible_message(window) or "; ".join(reporter.errors), SELF_TEST_TIMEOUT_S)
        lesion = self_test_lesion(window)
        result["lesion"] = {"id": lesion.id, "ground_truth": lesion.label}
        with timed(timings, "model_load"):
            from liverview.model.inference import load_bundle, resolve_device
            from liverview.model.classify import classify_lesion

            path, source = self_test_model(QSettings())
            loaded = load_bundle(path, resolve_device("auto"))
            result["model_source"] = source
            result["device"] = str(loaded.device)
            # torch is the model layer's import; only its version is read here.
            result["torch_version"] = sys.modules["torch"].__version__
            result["model"] = {"path": str(loaded.path), "name": loaded.name, "version": loaded.version,
                               "sha256": loaded.info.get("sha256"), "architecture": loaded.info.get("architecture"),
                               "classes": loaded.classes}
        with timed(timings, "classify"):
            prediction = classify_lesion(loaded, window.volume, lesion, heatmap=True)
        result.update(predicted=prediction.predicted, probabilities=prediction.probabilities,
                      uncertainty=prediction.uncertainty,
                      heatmap_shape=list(prediction.heatmap.cam.shape) if prediction.heatmap is not None else None)
        total = sum(prediction.probabilities.values())
        if abs(total - 1.0) > 1e-3 or prediction.predicted not in loaded.classes:
            raise SelfTestError(f"implausible output: probabilities sum to {total}, predicted {prediction.predicted!r}")
    finally:
        window.close()


def summarise_self_test(result: dict[str, Any]) -> str:
    """The self-test's verdict in one line: OK or FAILED, with the model and device that were used."""
    model = result.get("model") or {}
    used = (f"model {model.get('name')} {model.get('version')} ({str(model.get('sha256') or '')[:12]}, "
            f"{result.get('model_source')}) on {result.get('device')}") if model else "no model loaded"
    seconds = result["timings_s"].get("total", 0.0)
    if not result["ok"]:
        return f"liverview self-test: FAILED - {result['error']} ({used}; {seconds:.1f} s)"
    lesion = result["lesion"]
    p = result["probabilities"][result["predicted"]]
    return (f"liverview self-test: OK - {used}; demo lesion {lesion['id']} (ground truth {lesion['ground_truth']}) "
            f"classified {result['predicted']} (p={p:.2f}) in {seconds:.1f} s")


def run_self_test(out: Path | None, reporter: ErrorReporter, started: float) -> int:
    result: dict[str, Any] = {
        "ok": False, "error": None, "liverview_version": __version__, "python": platform.python_version(),
        "platform": platform.platform(), "frozen": bool(getattr(sys, "frozen", False)),
        "executable": sys.executable, "log_file": str(reporter.log_file) if reporter.log_file else None,
        "timings_s": {},
    }
    scratch = user_data_dir() / "self-test"
    try:
        scratch.mkdir(parents=True, exist_ok=True)
        self_test_steps(result, reporter, scratch / "settings.ini")
        if reporter.errors:
            raise SelfTestError("; ".join(reporter.errors))
        result["ok"] = True
    except Exception as exc:  # noqa: BLE001 - the report must say what failed, whatever it was
        log.exception("self-test failed")
        result["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    result["warnings"] = reporter.warnings
    result["timings_s"]["total"] = round(time.perf_counter() - started, 3)
    text = json.dumps(result, indent=2)
    if out == Path("-") and sys.stdout is not None:
        print(text)
    else:
        # Without --out the JSON goes to the user data folder: a windowed build has no console, and on
        # a terminal the person running it wants the one-line verdict, not 30 lines of JSON.
        if out in (None, Path("-")):
            out = scratch / "self-test.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
        log.info("self-test report written to %s", out)
        if sys.stdout is not None:
            print(summarise_self_test(result))
            print(f"report: {out}")
    log.info("self-test %s (%.1f s)", "passed" if result["ok"] else f"failed: {result['error']}",
             result["timings_s"]["total"])
    return 0 if result["ok"] else EXIT_FAILURE


def start(args: argparse.Namespace, reporter: ErrorReporter, started: float) -> int:
    log.info("liverview %s starting (Python %s, %s%s)", __version__, platform.python_version(),
             platform.platform(), ", frozen" if getattr(sys, "frozen", False) else "")
    problem = missing_display()
    if problem:
        log.error("%s", problem)
        if sys.stderr is not None:
            print(f"liverview: {problem}\n(log: {reporter.log_file})", file=sys.stderr)
        return EXIT_NO_DISPLAY
    from PySide6.QtCore import qInstallMessageHandler

    previous_handler = qInstallMessageHandler(qt_message_handler)
    try:
        if args.self_test:
            return run_self_test(args.out, reporter, started)
        return run_gui(args, reporter, started)
    finally:
        qInstallMessageHandler(previous_handler)


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    if getattr(sys, "frozen", False):
        import multiprocessing

        # A frozen app starts its worker processes (liverview.io.process_pool) by running itself again.
        multiprocessing.freeze_support()
    args = parse_args(argv)
    if args.self_test:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    log_file, remove_logging = setup_logging()
    reporter = ErrorReporter(log_file, interactive=not args.self_test)
    restore_hooks = reporter.install()
    try:
        return start(args, reporter, started)
    except Exception:  # noqa: BLE001 - e.g. Qt itself fails to import: the log must say so
        log.exception("liverview could not start (log: %s)", log_file)
        return EXIT_FAILURE
    finally:
        restore_hooks()
        remove_logging()


if __name__ == "__main__":
    sys.exit(main())
