"""What the GUI tests share: the main window on the test demo study."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from liverview.gui.main_window import MainWindow
from liverview.gui.theme import apply_dark_theme


@pytest.fixture
def open_demo_window(qtbot, tmp_path, demo_study):
    """Opens a 1500 x 950 main window, its settings in `tmp_path` (reader "Dr Ada", plus the keyword
    arguments, "/" written "__": model__path=...), showing the demo study once every slice is read."""
    return lambda **settings_values: _open(qtbot, tmp_path, demo_study, settings_values)


def _open(qtbot, tmp_path, demo_study, settings_values: dict) -> MainWindow:
    apply_dark_theme(QApplication.instance())
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    settings.setValue("reader/name", "Dr Ada")
    for key, value in settings_values.items():
        settings.setValue(key.replace("__", "/"), value)
    win = MainWindow(settings)
    win.resize(1500, 950)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.open_paths([str(demo_study.dicom_dir)])
    qtbot.waitUntil(lambda: win.volume is not None and win.volume.loaded.all() and win.store is not None
                    and not win.progress.isVisible(), timeout=30000)
    return win
