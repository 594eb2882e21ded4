"""The series browser fills while a folder is read, and opens series only once the scan is complete."""
from __future__ import annotations

import dataclasses

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication

from liverview.gui.main_window import MainWindow
from liverview.gui.series_browser import SeriesBrowser
from liverview.gui.theme import apply_dark_theme
from liverview.io import series as series_module
from liverview.io import scan_paths


def test_incomplete_scan_is_listed_but_does_not_open(qtbot, crlm_dir):
    browser = SeriesBrowser()
    qtbot.addWidget(browser)
    browser.show()
    opened = []
    browser.series_activated.connect(opened.append)
    complete = scan_paths(crlm_dir)
    partial = dataclasses.replace(complete, complete=False)

    browser.set_scan(partial)
    item = browser._items[complete.series[0].key]
    assert browser.reading_label.isVisible() and "41 image(s) so far" in browser.reading_label.text()
    assert not item.flags() & Qt.ItemIsSelectable
    browser._on_activated(item, 0)
    assert opened == []

    browser.set_scan(complete)
    item = browser._items[complete.series[0].key]
    assert not browser.reading_label.isVisible() and item.flags() & Qt.ItemIsSelectable
    browser._on_activated(item, 0)
    assert [info.key for info in opened] == [complete.series[0].key]


def test_window_lists_series_while_the_folder_is_read(qtbot, tmp_path, crlm_dir, monkeypatch):
    monkeypatch.setattr(series_module, "PARTIAL_EVERY_S", -1.0)  # a partial result after every file
    apply_dark_theme(QApplication.instance())
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    settings.setValue("model/preload", False)
    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.show()
    shown: list[tuple[bool, int]] = []
    set_scan = window.browser.set_scan
    monkeypatch.setattr(window.browser, "set_scan",
                        lambda scan: (shown.append((scan.complete, sum(s.n_images for s in scan.series))),
                                      set_scan(scan)))
    window.open_paths([str(crlm_dir)])
    qtbot.waitUntil(lambda: window.volume is not None and window.volume.loaded.all(), timeout=30000)
    partial_counts = [n for complete, n in shown if not complete]
    assert partial_counts and partial_counts == sorted(partial_counts) and max(partial_counts) < 41
    assert (True, 41) in shown and shown.index((True, 41)) > 0
    assert not window.browser.reading_label.isVisible()


def test_a_ct_series_whose_phase_is_unknown_says_so(crlm_dir, pacs_export):
    """An axial CT series is expected to have a contrast phase: when none could be told the browser
    says "Unknown phase" rather than nothing; a localizer (no phase to tell) stays without the line."""
    from liverview.gui.series_browser import series_label
    from liverview.imaging.contrast_phase import ContrastPhase, DecidedBy, PhaseDecision

    unknown = PhaseDecision(ContrastPhase.UNKNOWN, DecidedBy.NOTHING, "no aorta found in front of the spine")
    axial = scan_paths(crlm_dir).series[0]
    assert series_label(axial, unknown).splitlines()[-1] == "Unknown phase (undetermined)"
    localizer = next(s for s in scan_paths(pacs_export).series if s.plane != "axial")
    assert "phase" not in series_label(localizer, unknown).lower()
