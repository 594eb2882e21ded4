"""Start-up of the (unfrozen) application: display check, error reporting, settings, self-test."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from liverview import app


@pytest.mark.parametrize("environ, missing", [
    ({}, True),
    ({"QT_QPA_PLATFORM": "xcb"}, True),
    ({"DISPLAY": ":0"}, False),
    ({"WAYLAND_DISPLAY": "wayland-0"}, False),
    ({"QT_QPA_PLATFORM": "offscreen"}, False),
    ({"QT_QPA_PLATFORM": "minimal"}, False),
    ({"QT_QPA_PLATFORM": "vnc:size=800x600"}, False),
    ({"QT_QPA_PLATFORM": "wayland;offscreen"}, False),
])
def test_missing_display_on_linux(environ, missing):
    assert (app.missing_display(environ, "linux") is not None) is missing


def test_no_display_check_on_windows_and_macos():
    assert app.missing_display({}, "win32") is None
    assert app.missing_display({}, "darwin") is None


def test_without_display_main_exits_2_and_logs_why(monkeypatch, capsys):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert app.main([]) == app.EXIT_NO_DISPLAY
    assert "no display" in capsys.readouterr().err
    assert "no display: neither DISPLAY nor WAYLAND_DISPLAY" in app.log_file_path().read_text()


def test_uncaught_exception_is_logged_and_collected(tmp_path, caplog):
    reporter = app.ErrorReporter(tmp_path / "x.log", interactive=False)
    try:
        raise ValueError("broken slot")
    except ValueError as exc:
        with caplog.at_level(logging.CRITICAL, logger="liverview.app"):
            reporter(type(exc), exc, exc.__traceback__)
    assert reporter.errors == ["ValueError: broken slot"]
    assert "Traceback" in caplog.text and "broken slot" in caplog.text


def test_install_restores_the_previous_hooks():
    import sys
    import threading

    before = sys.excepthook, threading.excepthook
    restore = app.ErrorReporter(None, interactive=False).install()
    assert sys.excepthook is not before[0]
    restore()
    assert (sys.excepthook, threading.excepthook) == before


def test_unreadable_settings_are_set_aside(qapp):
    from pathlib import Path

    from PySide6.QtCore import QSettings

    qapp.setOrganizationName("liverview")
    qapp.setApplicationName("liverview")
    path = Path(QSettings().fileName())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\xff[General\nfoo=\x01\x02\"\n[[[")
    reporter = app.ErrorReporter(None, interactive=False)
    settings = app.open_settings(reporter)
    assert settings.status() == QSettings.NoError
    assert not path.exists()
    assert len(list(path.parent.glob(f"{path.name}.unreadable-*"))) == 1
    assert reporter.warnings and "cannot be read" in reporter.warnings[0]


def test_the_demo_is_offered_on_the_first_start_only(qapp, tmp_path):
    from PySide6.QtCore import QSettings

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat)
    assert app.first_start(settings) is True
    assert app.first_start(settings) is False


def test_self_test_in_process(with_demo, tiny_bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    monkeypatch.setenv(app.MODEL_OVERRIDE_ENV, str(tiny_bundle))
    out = tmp_path / "report.json"
    assert app.main(["--self-test", "--out", str(out)]) == 0
    verdict = capsys.readouterr().out.splitlines()[0]
    assert verdict.startswith("liverview self-test: OK - model packaging-test-model 0.0.0") and " on cpu;" in verdict
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["error"] is None
    assert report["frozen"] is False
    assert report["model"]["path"] == str(tiny_bundle)
    assert report["predicted"] in report["model"]["classes"]
    assert sum(report["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert report["lesion"] == {"id": "L1", "ground_truth": "hcc"}
    assert {"window", "open_demo", "model_load", "classify", "total"} <= set(report["timings_s"])
    assert "self-test passed" in app.log_file_path().read_text()


def test_self_test_uses_the_model_loaded_in_the_app(with_demo, tiny_bundle, tmp_path, monkeypatch, capsys, qapp):
    """Walkthrough step 15: after File > Load model... the self-test still named and ran the bundled model."""
    from PySide6.QtCore import QSettings

    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    monkeypatch.delenv(app.MODEL_OVERRIDE_ENV, raising=False)
    qapp.setOrganizationName("liverview")
    qapp.setApplicationName("liverview")
    QSettings().setValue("model/path", str(tiny_bundle))
    QSettings().sync()
    out = tmp_path / "report.json"
    assert app.main(["--self-test", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"]["path"] == str(tiny_bundle) and report["model_source"].startswith("loaded in the app")
    assert "packaging-test-model" in capsys.readouterr().out.splitlines()[0]


def test_self_test_reports_a_missing_model(with_demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    monkeypatch.setenv(app.MODEL_OVERRIDE_ENV, str(tmp_path / "no-such-model"))
    assert app.main(["--self-test"]) == app.EXIT_FAILURE
    verdict, where = capsys.readouterr().out.splitlines()
    assert verdict.startswith("liverview self-test: FAILED - BundleError") and "no model loaded" in verdict
    report = json.loads(Path(where.removeprefix("report: ")).read_text())
    assert report["ok"] is False
    assert "BundleError" in report["error"] and "no-such-model" in report["error"]
    assert report["lesion"]["id"] == "L1"  # what worked before the failure is still reported


def test_self_test_without_a_console_writes_its_report_to_the_user_data(with_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    monkeypatch.setenv(app.MODEL_OVERRIDE_ENV, str(tmp_path / "no-such-model"))
    monkeypatch.setattr("sys.stdout", None)  # as in a windowed Windows/macOS build
    assert app.main(["--self-test"]) == app.EXIT_FAILURE
    report = json.loads((with_demo / "self-test" / "self-test.json").read_text())
    assert report["ok"] is False


def test_a_failing_window_is_reported_in_a_dialog(qapp, monkeypatch, caplog):
    import argparse

    shown = []

    class BrokenWindow:
        def __init__(self, settings):
            raise RuntimeError("no OpenGL context")

    monkeypatch.setattr("liverview.gui.main_window.MainWindow", BrokenWindow)
    monkeypatch.setattr(app, "show_error", lambda title, text, log_file, **kw: shown.append((title, text)))
    reporter = app.ErrorReporter(None, interactive=True)
    args = argparse.Namespace(paths=[], demo=False)
    assert app.run_gui(args, reporter, 0.0) == app.EXIT_FAILURE
    assert shown == [("liverview could not start", "RuntimeError: no OpenGL context")]
    assert "no OpenGL context" in caplog.text


def test_accepting_the_demo_offer_opens_it(qapp, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    opened = []
    window = type("FakeWindow", (), {"open_demo": lambda self: opened.append(True)})()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    app.offer_demo(window)
    assert opened == [True]


def test_self_test_json_on_stdout_when_asked(with_demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    monkeypatch.setenv(app.MODEL_OVERRIDE_ENV, str(tmp_path / "no-such-model"))
    assert app.main(["--self-test", "--out", "-"]) == app.EXIT_FAILURE
    assert json.loads(capsys.readouterr().out)["ok"] is False
    assert not (with_demo / "self-test" / "self-test.json").exists()


def test_sigterm_closes_the_window_as_the_user_would(tmp_path, crlm_dir):
    """`kill` (SIGTERM) of the running app closes its window as the user would: settings and
    annotations saved, exit status 0 (Python's default for SIGTERM ends it on the spot)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "LIVERVIEW_DATA_DIR": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "PYTHONPATH": str(repo)}
    log = tmp_path / "data" / "logs" / "liverview.log"
    proc = subprocess.Popen([sys.executable, "-m", "liverview", str(crlm_dir)], env=env, cwd=str(repo),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (log.is_file() and "window shown" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "geometry" in next((tmp_path / "config").rglob("*.conf")).read_text()
