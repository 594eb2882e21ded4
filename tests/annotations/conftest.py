"""Fixtures for the export/import tests: the real CT series with made-up patient identifiers added
(the TCIA copy is already de-identified, so a leak would otherwise go unnoticed), and lesions drawn
on it as polygons inside the liver."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

from liverview.annotations.deid import Pseudonymizer
from liverview.annotations.document import AnnotationDocument, Lesion, Roi
from liverview.io import load_series

#: Identifiers written into the copy; no pseudonymised export may contain any of them.
IDENTIFIERS = {
    "PatientName": "Doe^Jane^Q",
    "PatientID": "MRN-4711-0815",
    "PatientBirthDate": "19560714",
    "InstitutionName": "St. Example Hospital",
    "ReferringPhysicianName": "House^Gregory",
    "AccessionNumber": "ACC99887766",
}
#: Strings to look for in exported bytes (PN components appear without the carets in some outputs).
LEAK_STRINGS = ["Doe^Jane", "Jane", "MRN-4711-0815", "19560714", "St. Example Hospital", "House^Gregory",
                "ACC99887766"]


def _identified_copy(src: Path, target: Path, study_uid: str | None = None) -> Path:
    target.mkdir(parents=True)
    series_uid = pydicom.uid.generate_uid() if study_uid else None
    for path in sorted(src.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword, value in IDENTIFIERS.items():
            setattr(ds, keyword, value)
        if study_uid:
            # A second study of the same patient: new study, series and image UIDs.
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(target / path.name)
    return target


@pytest.fixture(scope="session")
def identified_dir(crlm_dir, tmp_path_factory) -> Path:
    """The 41-slice real CT with the `IDENTIFIERS` written into every file."""
    return _identified_copy(crlm_dir, tmp_path_factory.mktemp("identified") / "ct")


@pytest.fixture(scope="session")
def identified_volume(identified_dir):
    return load_series(identified_dir)


@pytest.fixture(scope="session")
def second_study_volume(crlm_dir, tmp_path_factory):
    """The same images as another study of the same patient (new Study/Series/SOP UIDs)."""
    folder = _identified_copy(crlm_dir, tmp_path_factory.mktemp("second") / "ct", pydicom.uid.generate_uid())
    return load_series(folder)


def circle(cx: float, cy: float, r: float, n: int = 40) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a in t]


def draw_document(volume) -> AnnotationDocument:
    """Three lesions inside the liver of crlm-ct-1004: a 5-slice "metastasis", a 2-slice
    "hemangioma" and a 1-slice unlabelled one."""
    doc = AnnotationDocument(volume.study_uid, volume.series_uid, volume.frame_of_reference_uid)

    def rois(z_range, cx, cy, radius):
        return [Roi(z, circle(cx, cy, radius(z)), sop_instance_uid=volume.sop_instance_uids[z]) for z in z_range]

    doc.lesions.append(Lesion(reader="Dr. Reader One", label="metastasis", confidence="certain",
                              rois=rois(range(23, 28), 150.0, 230.0, lambda z: 14.0 - 3.0 * abs(z - 25))))
    doc.lesions.append(Lesion(reader="Dr. Reader One", label="hemangioma",
                              rois=rois(range(28, 30), 200.0, 210.0, lambda z: 8.5)))
    doc.lesions.append(Lesion(reader="Dr. Reader One", label=None, rois=rois([30], 180.0, 220.0, lambda z: 6.0)))
    return doc


@pytest.fixture
def document(identified_volume) -> AnnotationDocument:
    return draw_document(identified_volume)


@pytest.fixture
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(b"liverview test secret, 32 bytes!")


def run_dciodvfy(path: Path) -> list[str]:
    """dciodvfy's output lines; fails (never skips) when dicom3tools is not installed."""
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy not found: install dicom3tools (apt-get install -y dicom3tools) to validate the "
                    "DICOM that liverview writes")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def assert_no_leak(data: bytes | str, where: str) -> None:
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    leaks = [s for s in LEAK_STRINGS if s in text]
    assert not leaks, f"{where} contains source identifiers {leaks}"


def assert_leaks(data: bytes | str, where: str) -> None:
    """Without pseudonymisation the patient's name, ID and birth date are kept."""
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    for s in ("Doe^Jane", "MRN-4711-0815", "19560714"):
        assert s in text, f"{where} lacks {s} although pseudonymisation was off"


@pytest.fixture
def dciodvfy():
    """`dciodvfy(path)` -> output lines (fails the test when dicom3tools is missing)."""
    return run_dciodvfy


@pytest.fixture
def leak():
    """`leak.absent(data, where)` / `leak.present(data, where)` checks for the source identifiers."""
    return SimpleNamespace(absent=assert_no_leak, present=assert_leaks, strings=LEAK_STRINGS)


@pytest.fixture
def draw():
    """`draw(volume)` -> a fresh `AnnotationDocument` with the three test lesions."""
    return draw_document
