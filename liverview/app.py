"""`liverview [PATH ...] [--demo]`: start the desktop application."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from logging.handlers import RotatingFileHandler

from liverview import __version__
from liverview.paths import user_data_dir


def setup_logging() -> None:
    logs = user_data_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(logs / "liverview.log", maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler, logging.StreamHandler()])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="liverview", description="Liver CT/MR viewer and lesion annotation")
    parser.add_argument("paths", nargs="*", help="DICOM folder(s), file(s), zip or DICOMDIR to open")
    parser.add_argument("--demo", action="store_true", help="open the bundled synthetic demo study")
    parser.add_argument("--version", action="version", version=f"liverview {__version__}")
    args = parser.parse_args(argv)
    setup_logging()

    from PySide6.QtWidgets import QApplication

    from liverview.gui.main_window import MainWindow
    from liverview.gui.theme import apply_dark_theme

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("liverview")
    app.setApplicationName("liverview")
    app.setApplicationVersion(__version__)
    apply_dark_theme(app)
    window = MainWindow()
    window.show()
    if args.paths:
        window.open_paths(args.paths)
    elif args.demo:
        window.open_demo()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
