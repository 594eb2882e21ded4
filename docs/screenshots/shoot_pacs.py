"""Regenerate the Query PACS screenshot of docs/pacs.md against a local Orthanc holding crlm-ct-1004,
hcc-tace-006 and the demo study, the first study retrieved and open in the window behind.

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/shoot_pacs.py

Writes query-pacs.png next to this file (look at it before committing). Orthanc, the settings and the
app's data folder live in a temporary folder.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SERIES = ROOT.parent / "shared" / "data" / "series"
sys.path.insert(0, str(HERE))

from shoot_classification import start_app, wait_until  # noqa: E402 - the sibling script's, shared


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="liverview-shot-"))
    app = start_app(work)
    sys.path.insert(0, str(ROOT / "tests" / "net"))
    from orthanc_server import Orthanc, node_for
    from PySide6.QtCore import QSettings

    from liverview.gui.main_window import MainWindow
    from liverview.gui.pacs_nodes import save_nodes
    from liverview.net.query import DatePreset
    from liverview.synth.demo import write_demo_study

    server = Orthanc(work / "orthanc").start()
    try:
        for name in ("crlm-ct-1004", "hcc-tace-006"):
            server.upload(sorted((SERIES / name / "image").glob("*.dcm")))
        server.upload(sorted(write_demo_study(work / "demo", shape_zyx=(60, 256, 256)).dicom_dir.glob("*.dcm")))
        settings = QSettings(str(work / "settings.ini"), QSettings.IniFormat)
        settings.setValue("model/preload", False)
        node = node_for(server).with_changes(name="Radiology PACS")
        save_nodes(settings, [node])
        window = MainWindow(settings)
        window.resize(1400, 900)
        window.show()
        dialog = window.pacs.show_query()
        dialog.modality.setCurrentText("CT")
        dialog.date.setCurrentIndex(dialog.date.findData(DatePreset.ANY))
        task = dialog.search()
        wait_until(app, lambda: not task.is_running() and dialog.tree.topLevelItemCount() == 3, timeout=60.0)
        for i in range(3):
            dialog.tree.topLevelItem(i).setExpanded(True)
        wait_until(app, lambda: all(dialog.tree.topLevelItem(i).childCount() for i in range(3)), timeout=60.0)
        crlm = next(dialog.tree.topLevelItem(i) for i in range(3) if dialog.tree.topLevelItem(i).text(1) == "CRLM-CT-1004")
        dialog.tree.setCurrentItem(crlm)
        task = dialog.retrieve(crlm)
        wait_until(app, lambda: not task.is_running() and window.volume is not None and window.volume.loaded.all(), timeout=60.0)
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        dialog.grab().save(str(HERE / "query-pacs.png"))
        window.close()
    finally:
        server.stop(graceful=False)
    print(HERE / "query-pacs.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
