"""Regenerate the Model-panel screenshots of the README and docs/model.md with the bundled model:
the demo study's HCC lesion and the developer-outlined metastasis of the real series crlm-ct-1004.

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/shoot_classification.py

Writes classify-demo.png and classify-crlm-ct-1004.png next to this file (look at them before
committing). Settings and the app's data folder go to a temporary folder, not the user's.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODEL = ROOT / "resources" / "models" / "liver-lesion-classifier"
CRLM_SERIES = ROOT.parent / "shared" / "data" / "series" / "crlm-ct-1004"
CRLM_OUTLINES = ROOT / "tests" / "data" / "crlm-ct-1004-metastases.json"
DEMO_LESION = "hcc"


def wait_until(app, condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the window did not get there in time")
        app.processEvents()
        time.sleep(0.02)


def start_app(work: Path):
    """The Qt application in the app's dark theme, its data folder in `work` (not the user's)."""
    os.environ["LIVERVIEW_DATA_DIR"] = str(work / "data")
    from PySide6.QtWidgets import QApplication

    from liverview.gui.theme import apply_dark_theme

    app = QApplication.instance() or QApplication(sys.argv)
    apply_dark_theme(app)
    return app


def open_window(work: Path, name: str):
    """The app's main window with its settings in `work` (not the user's), the bundled model, maximised
    to the screenshots' size."""
    from PySide6.QtCore import QSettings

    from liverview.gui.main_window import MainWindow

    settings = QSettings(str(work / f"{name}.ini"), QSettings.IniFormat)
    settings.setValue("reader/name", "Dr Ada")
    settings.setValue("model/path", str(MODEL))
    settings.setValue("model/device", "cpu")
    window = MainWindow(settings)
    window.resize(1500, 950)
    window.show()
    return window


def classify_and_grab(app, window, lesion_id: str, out: Path) -> None:
    """Select the lesion, press Classify, wait for the answer and its heatmap, save the window as `out`."""
    window.jump_to_lesion(lesion_id)
    controller = window.classification
    results: list[object] = []
    controller.worker.result.connect(lambda *args: results.append(args))
    controller.classify_selected()
    wait_until(app, lambda: bool(results) and controller.overlay.is_visible())
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    window.grab().save(str(out))
    window.close()
    print(f"wrote {out}")


def shoot(app, work: Path, study: Path, annotations: Path, lesion_class: str | None, out: Path) -> None:
    window = open_window(work, out.stem)
    window.open_paths([str(study)])
    wait_until(app, lambda: window.volume is not None and window.volume.loaded.all() and window.store is not None
               and not window.progress.isVisible())
    window.import_annotations(annotations)
    lesion = next(x for x in window.store.document.lesions if lesion_class is None or x.label == lesion_class)
    classify_and_grab(app, window, lesion.id, out)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        app = start_app(work)
        from liverview.synth.demo import write_demo_study

        demo = write_demo_study(work / "demo")
        shoot(app, work, demo.dicom_dir, demo.ground_truth_path, DEMO_LESION, HERE / "classify-demo.png")
        shoot(app, work, CRLM_SERIES, CRLM_OUTLINES, None, HERE / "classify-crlm-ct-1004.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
