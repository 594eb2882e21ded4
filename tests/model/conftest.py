"""Fixtures for the model tests: a tiny simulated dataset, and a real export of the CRLM series."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

CLASSES = ["benign_cyst", "hemangioma", "hcc", "metastasis"]


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> Path:
    """24 simulated lesions (6 per class) in 8 pseudo-patients, in the training-export format."""
    from liverview.model.toy_dataset import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "dataset", lesions_per_class=6, seed=1)


@pytest.fixture(scope="session")
def toy_dataset_b(tmp_path_factory) -> Path:
    """A second folder (other seed, other pseudo-patients): training reads several folders."""
    from liverview.model.toy_dataset import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("toyb") / "dataset", lesions_per_class=3, seed=2)


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
