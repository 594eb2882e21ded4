from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LIVERVIEW_SHARED_DATA", REPO.parent / "shared" / "data"))
CRLM = SHARED_DATA / "series" / "crlm-ct-1004" / "image"
CORPUS = SHARED_DATA / "corpus"


@pytest.fixture(autouse=True)
def _private_user_data(tmp_path_factory, monkeypatch):
    """Every test gets its own user-data folder and settings, never the developer's real ones."""
    data = tmp_path_factory.mktemp("userdata")
    monkeypatch.setenv("LIVERVIEW_DATA_DIR", str(data))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(data / "config"))
    return data


@pytest.fixture(scope="session")
def crlm_dir() -> Path:
    if not CRLM.is_dir():
        pytest.fail(f"real test data missing: {CRLM} (set LIVERVIEW_SHARED_DATA to the shared data folder)")
    return CRLM


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"real test data missing: {CORPUS} (set LIVERVIEW_SHARED_DATA to the shared data folder)")
    return CORPUS


@pytest.fixture
def crlm_copy(tmp_path, crlm_dir) -> Path:
    """A writable copy of the real CT series (41 files)."""
    target = tmp_path / "crlm"
    shutil.copytree(crlm_dir, target)
    return target


@pytest.fixture
def pacs_export(tmp_path, crlm_dir) -> Path:
    """A PACS-like export: venous phase (the real series), an 'arterial' copy with its own Series UID,
    a coronal localizer that shares the venous Series UID, and a README."""
    root = tmp_path / "export"
    arterial_uid = pydicom.uid.generate_uid()
    for folder in ("venous", "arterial"):
        (root / folder).mkdir(parents=True)
    for src in sorted(crlm_dir.glob("*.dcm")):
        ds = pydicom.dcmread(src)
        ds.save_as(root / "venous" / src.name)
        ds.SeriesInstanceUID = arterial_uid
        ds.SeriesDescription = "ARTERIAL"
        ds.SeriesNumber = 1
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(root / "arterial" / src.name)
    ds = pydicom.dcmread(crlm_dir / "1-01.dcm")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(root / "venous" / "LOCALIZER")
    (root / "README.TXT").write_text("viewer instructions")
    return root


@pytest.fixture(scope="session")
def demo_study(tmp_path_factory):
    """The synthetic demo study (smaller than the bundled one), generated once per test session."""
    from liverview.synth.demo import write_demo_study

    return write_demo_study(tmp_path_factory.mktemp("demo"), shape_zyx=(60, 256, 256))


HCC = SHARED_DATA / "series" / "hcc-tace-006" / "image"


@pytest.fixture(scope="session")
def hcc_dir() -> Path:
    """A real arterial-phase CT (109 slices, 2.5 mm) of a patient with HCC, no tumour mask."""
    if not HCC.is_dir():
        pytest.fail(f"real test data missing: {HCC} (set LIVERVIEW_SHARED_DATA to the shared data folder)")
    return HCC
