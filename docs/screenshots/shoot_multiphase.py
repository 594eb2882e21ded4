"""Regenerate the multiphase Model-panel screenshot of docs/model.md: a simulated four-phase study (one
phantom patient, an HCC, written as four DICOM series of one study and Frame of Reference), the lesion
outlined on the portal-venous series and classified by the bundled model with its phase reader.

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/shoot_multiphase.py

Writes classify-multiphase.png next to this file (look at it before committing). Settings and the app's
data folder go to a temporary folder, not the user's.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from shoot_classification import classify_and_grab, open_window, start_app, wait_until

HERE = Path(__file__).resolve().parent
PHASES = ("non_contrast", "arterial", "portal_venous", "delayed")
SEED = 11


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        app = start_app(work)
        from liverview.annotations.labels import LesionClass
        from liverview.synth.simulator import SimulatorConfig, patient_document, simulate_patient, write_patient_study

        patient = simulate_patient(SEED, [LesionClass.HCC], SimulatorConfig(phases=PHASES, diameter_mm=(24.0, 30.0)))
        write_patient_study(patient, work / "study")
        window = open_window(work, "multiphase")
        window.open_paths([str(work / "study")])
        wait_until(app, lambda: window.scan is not None and len(window.scan.series) == 4)
        venous = next(info for info in window.scan.series if "portal" in info.identity.series_description)
        window.open_series(venous)
        wait_until(app, lambda: window.volume is not None and window.volume.series_uid == venous.series_uid
                   and window.volume.loaded.all() and window.store is not None and not window.progress.isVisible())
        outlines = work / "outlines.json"
        outlines.write_text(json.dumps(patient_document(patient, window.volume).to_dict()))
        window.import_annotations(outlines)
        classify_and_grab(app, window, window.store.document.lesions[0].id, HERE / "classify-multiphase.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
