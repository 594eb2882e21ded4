"""Dark reading-room theme: low-luminance greys so the images are the brightest thing on screen."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication


def apply_dark_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    palette = QPalette()
    base, window, text, highlight = QColor(24, 24, 26), QColor(36, 36, 40), QColor(220, 220, 220), QColor(64, 110, 170)
    for role, color in (
        (QPalette.Window, window), (QPalette.WindowText, text), (QPalette.Base, base),
        (QPalette.AlternateBase, window), (QPalette.ToolTipBase, QColor(50, 50, 55)), (QPalette.ToolTipText, text),
        (QPalette.Text, text), (QPalette.Button, window), (QPalette.ButtonText, text),
        (QPalette.BrightText, QColor(255, 80, 80)), (QPalette.Highlight, highlight),
        (QPalette.HighlightedText, QColor(255, 255, 255)), (QPalette.Link, QColor(110, 160, 230)),
        (QPalette.PlaceholderText, QColor(130, 130, 130)),
    ):
        palette.setColor(role, color)
    for role in (QPalette.WindowText, QPalette.Text, QPalette.ButtonText):
        palette.setColor(QPalette.Disabled, role, QColor(110, 110, 110))
    app.setPalette(palette)
    pg.setConfigOptions(imageAxisOrder="row-major", background="k", foreground="#d0d0d0", antialias=False)
