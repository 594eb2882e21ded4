"""Fixtures for the model tests: tiny simulated datasets, and a real export of the CRLM series."""
from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from liverview import __version__
from liverview.annotations.dataset_format import Patch, patch_bbox, write_dataset
from liverview.annotations.labels import BUILTIN_LABELS, LesionClass
from liverview.annotations.storage import now_iso
from liverview.synth import insert_lesion, sample_lesion_spec, simulate_acquisition, to_int16_hu

CLASSES = ["benign_cyst", "hemangioma", "hcc", "metastasis"]
SPACING_MM = (2.5, 0.8, 0.8)


def write_lesion_blocks(folder: Path, lesions_per_class: int, seed: int, lesions_per_patient: int = 3) -> Path:
    """A dataset of simulated lesions, each painted by the simulator into its own small block of
    homogeneous liver with the scanner's blur and noise: no anatomy around it, so a dataset of dozens
    of lesions is written in a fraction of a second (`liverview-synth` makes whole phantom patients).
    Lesions are grouped into pseudo-patients of `lesions_per_patient` (mixed classes), so grouped
    splitting has something to do. Everything follows from `seed`."""
    rng = np.random.default_rng(seed)
    plan = [c for c in LesionClass for _ in range(lesions_per_class)]
    lesions = []
    for n, index in enumerate(rng.permutation(len(plan))):
        lesion_class = plan[index]
        diameter = float(np.exp(rng.uniform(np.log(8.0), np.log(40.0))))
        half_mm = diameter * 0.75 + 15.0
        shape = tuple(int(np.ceil(2 * half_mm / s)) | 1 for s in SPACING_MM)
        centre = tuple((k - 1) / 2.0 * s for k, s in zip(shape, SPACING_MM))
        hu = np.full(shape, float(rng.uniform(95.0, 115.0)), dtype=np.float32)
        spec = sample_lesion_spec(lesion_class, centre, diameter, int(rng.integers(0, 2**31 - 1)))
        mask = insert_lesion(hu, np.ones(shape, dtype=bool), spec, SPACING_MM)
        noise = float(rng.uniform(8.0, 16.0))
        simulate_acquisition(hu, SPACING_MM, rng, noise_sigma_hu=noise)
        assert mask.any(), f"lesion {n} ({lesion_class.value}, {diameter:.1f} mm) left no voxel in its block"
        bbox = patch_bbox(mask)
        region = tuple(slice(int(a), int(b)) for a, b in bbox)
        patient = f"toy-{seed}-{n // lesions_per_patient:04d}"
        uid = hashlib.sha256(f"toy/{seed}/{n}".encode()).hexdigest()[:20]
        line = {"lesion_uid": uid, "lesion_id": f"L{n}", "label": lesion_class.value, "reader": "simulator",
                "confidence": "certain", "label_source": "simulator", "spacing_mm": list(SPACING_MM),
                "source_shape": list(shape), "bbox_zyx": bbox.tolist(), "lesion_bbox_zyx": patch_bbox(mask, 0, 0).tolist(),
                "n_voxels": int(mask.sum()), "patient": patient,
                "series_uid": f"2.25.{int(hashlib.sha256(patient.encode()).hexdigest()[:16], 16)}",
                "modality": "CT", "is_hu": True, "contrast_phase": "portal_venous", "phases": {},
                "synth": {**spec.to_dict(), "patient": {"noise_sigma_hu": round(noise, 2)}}}
        patch = Patch(to_int16_hu(hu)[region], mask[region], np.asarray(SPACING_MM), bbox, "portal_venous")
        lesions.append((line, patch))
    classes = [{"id": label.id, "name": label.name} for label in BUILTIN_LABELS if label.id in CLASSES]
    return write_dataset(folder, lesions, classes, now=now_iso, liverview_version=__version__,
                         description="simulated lesions in homogeneous liver blocks (tests/model/conftest.py)")


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> Path:
    """24 simulated lesions (6 per class) in 8 pseudo-patients, in the training-export format."""
    return write_lesion_blocks(tmp_path_factory.mktemp("toy") / "dataset", lesions_per_class=6, seed=1)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """4 lesions (one per class) in 2 pseudo-patients: too few for a validation or test split."""
    return write_lesion_blocks(tmp_path_factory.mktemp("tiny") / "dataset", lesions_per_class=1, seed=3)


@pytest.fixture(scope="session")
def toy_dataset_b(tmp_path_factory) -> Path:
    """A second folder (other seed, other pseudo-patients): training reads several folders."""
    return write_lesion_blocks(tmp_path_factory.mktemp("toyb") / "dataset", lesions_per_class=3, seed=2)


def _circle(cx: float, cy: float, r: float, n: int = 48) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a in t]


@pytest.fixture(scope="session")
def crlm_export(crlm_dir, tmp_path_factory):
    """The real CT series, three outlined lesions (one touching the image corner, so the export's
    margins are clipped), exported with the app's own training-dataset export."""
    from liverview.annotations.deid import Pseudonymizer
    from liverview.annotations.document import AnnotationDocument, Lesion, Roi
    from liverview.annotations.export_dataset import export_dataset
    from liverview.io import load_series

    volume = load_series(crlm_dir)
    doc = AnnotationDocument(volume.study_uid, volume.series_uid, volume.frame_of_reference_uid)

    def rois(z_range, cx, cy, radius):
        return [Roi(z, _circle(cx, cy, radius(z)), sop_instance_uid=volume.sop_instance_uids[z]) for z in z_range]

    doc.lesions.append(Lesion(reader="R1", label="metastasis",
                              rois=rois(range(23, 28), 150.0, 230.0, lambda z: 14.0 - 3.0 * abs(z - 25))))
    doc.lesions.append(Lesion(reader="R1", label="hemangioma", rois=rois(range(28, 30), 200.0, 210.0, lambda z: 8.5)))
    doc.lesions.append(Lesion(reader="R1", label="benign_cyst", rois=rois([40], 6.0, 6.0, lambda z: 5.0)))
    folder = tmp_path_factory.mktemp("crlm-export") / "dataset"
    export_dataset(volume, doc, folder, pseudonymizer=Pseudonymizer(b"model tests secret"))
    return SimpleNamespace(volume=volume, document=doc, folder=folder)


PHASES = ("non_contrast", "arterial", "portal_venous", "delayed")


@pytest.fixture(scope="session")
def multiphase_dataset(tmp_path_factory) -> Path:
    """12 simulated lesions (3 per class) of 9 phantom patients rendered in the four contrast phases."""
    from liverview.synth.simulator import SimulatorConfig, write_simulated_dataset

    folder = tmp_path_factory.mktemp("multiphase") / "dataset"
    write_simulated_dataset(folder, 3, seed=5, patients=9,
                            config=SimulatorConfig(phases=PHASES, diameter_mm=(12.0, 30.0)))
    return folder
