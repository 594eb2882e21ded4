from __future__ import annotations

import os
import shutil
import sys
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
    """Every test gets its own user-data folder, cache and settings, never the developer's real ones."""
    data = tmp_path_factory.mktemp("userdata")
    monkeypatch.setenv("LIVERVIEW_DATA_DIR", str(data))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(data / "config"))
    monkeypatch.setenv("LIVERVIEW_CACHE_DIR", str(data / "cache"))
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


#: The other series: 0.7 mm pixels on 420 x 420, its centre 12.3 mm right of and 8.1 mm behind the
#: first, 2.5 mm slices whose positions fall between the first series' ones.
PIXEL_MM, MATRIX, SLICE_MM = 0.7, 420, 2.5
OFFSET_XY_MM = (-12.3, 8.1)


def _resample_series(volume, folder: Path, breathing_mm: tuple[float, float, float], frame_of_reference: str,
                     description: str = "DELAYED 2.5mm") -> Path:
    """`volume` resampled onto the other grid, its content moved by `breathing_mm` (LPS), written as DICOM."""
    from datetime import datetime

    import numpy as np

    from liverview.imaging.align import sample_trilinear
    from liverview.synth.dicom_writer import PatientInfo, SeriesPlacement, write_ct_series

    lesion_z = float(volume.positions_mm[17][2])
    n = 16
    z0 = lesion_z - (n // 2) * SLICE_MM + 1.3
    centre = volume.positions_mm[0][:2] + 0.5 * np.asarray(volume.shape[:0:-1]) * volume.spacing_mm[:0:-1]
    origin = np.array([centre[0] + OFFSET_XY_MM[0] - MATRIX / 2 * PIXEL_MM, centre[1] + OFFSET_XY_MM[1] - MATRIX / 2 * PIXEL_MM, z0])
    ys, xs = np.mgrid[0:MATRIX, 0:MATRIX]
    out = np.empty((n, MATRIX, MATRIX), dtype=np.int16)
    for k in range(n):
        points = np.stack([origin[0] + xs.ravel() * PIXEL_MM, origin[1] + ys.ravel() * PIXEL_MM,
                           np.full(xs.size, origin[2] + k * SLICE_MM)], axis=1) - np.asarray(breathing_mm)
        values = sample_trilinear(volume.array, volume.patient_to_index(points))
        out[k] = np.nan_to_num(values, nan=-1024).reshape(MATRIX, MATRIX).round().astype(np.int16)
    identity = SeriesPlacement(volume.study_uid, "2.25.%d" % (abs(hash(str(breathing_mm))) % 10**30), frame_of_reference,
                              datetime(2026, 12, 6, 10, 0), series_number=7)
    write_ct_series(out, (SLICE_MM, PIXEL_MM, PIXEL_MM), folder, PatientInfo(), description, identity,
                    origin_mm_xyz=tuple(origin))
    return folder




@pytest.fixture(scope="session")
def resample_series():
    """Another reconstruction of a series in the same patient space (other field of view, pixels and slices,
    optionally moved by breathing), written as DICOM: `resample_series(volume, folder, breathing_mm, for_uid)`."""
    return _resample_series


# A real PACS (Debian's Orthanc, installed by `make test`) for the network and PACS GUI tests.
sys.path.insert(0, str(REPO / "tests" / "net"))


@pytest.fixture(scope="session")
def pacs(tmp_path_factory, crlm_dir, demo_study):
    """One Orthanc for the session holding crlm-ct-1004 and the demo study (tests may add, not remove)."""
    from orthanc_server import start_orthanc

    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    server.upload(sorted(crlm_dir.glob("*.dcm")))
    server.upload(sorted(demo_study.dicom_dir.rglob("*.dcm")))
    yield server
    server.stop(graceful=False)
