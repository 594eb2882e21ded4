"""NIfTI label map (geometry against the DICOM, read by nibabel and ITK) and the CSV lesion table."""
from __future__ import annotations

import csv
import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest

from liverview.annotations.document import Lesion
from liverview.annotations.export_nifti import CSV_COLUMNS, export_csv, export_nifti, nifti_affine
from liverview.annotations.measurements import lesion_mask, measure_lesion


def test_affine_maps_voxel_centres_like_index_to_patient(identified_volume):
    volume = identified_volume
    affine = nifti_affine(volume)
    n, rows, cols = volume.shape
    for z, y, x in [(0, 0, 0), (n - 1, rows - 1, cols - 1), (20, 100, 400), (7, 511, 0), (33, 250.5, 17.25)]:
        lps = volume.index_to_patient(z, y, x)
        ras = affine @ np.array([x, y, z, 1.0])
        assert ras[:3] == pytest.approx([-lps[0], -lps[1], lps[2]], abs=1e-4)


def test_label_map_reads_back_in_register(identified_volume, document, pseudonymizer, tmp_path, leak):
    volume = identified_volume
    image_path, sidecar_path = export_nifti(volume, document, tmp_path / "labels.nii.gz", pseudonymizer=pseudonymizer)
    assert image_path.name == "labels.nii.gz" and sidecar_path.name == "labels.json"

    image = nib.load(image_path)
    assert image.get_data_dtype() == np.int16
    assert image.shape == (volume.shape[2], volume.shape[1], volume.shape[0])
    assert int(image.header["sform_code"]) == 1 and int(image.header["qform_code"]) == 1
    assert np.allclose(image.affine, nifti_affine(volume), atol=1e-4)
    assert np.allclose(image.get_qform(), nifti_affine(volume), atol=1e-4)
    labels = np.asarray(image.dataobj).transpose(2, 1, 0)
    for k, lesion in enumerate(document.lesions, start=1):
        assert np.array_equal(labels == k, lesion_mask(volume, lesion))
    assert set(np.unique(labels)) == {0, 1, 2, 3}

    sidecar = json.loads(sidecar_path.read_text())
    assert sidecar["format"] == "liverview.nifti-labels" and sidecar["image"] == "labels.nii.gz"
    first = sidecar["labels"]["1"]
    assert first["lesion_id"] == document.lesions[0].id and first["label"] == "metastasis"
    assert first["label_name"] == "Metastasis" and first["code"]["value"] == "14799000"
    assert first["confidence"] == "certain" and first["reader"].startswith("reader-")
    assert sidecar["labels"]["3"]["label"] is None
    assert sidecar["source"]["patient"] == pseudonymizer.patient_pseudonym("MRN-4711-0815")
    assert sidecar["source"]["study_uid"] == pseudonymizer.remap_uid(volume.study_uid)
    assert sidecar["warnings"] == []
    leak.absent(sidecar_path.read_text(), "NIfTI sidecar")
    leak.absent(image_path.read_bytes(), "NIfTI image")


def test_itk_places_labels_on_the_dicom_grid(identified_volume, document, tmp_path):
    """SimpleITK (the library under 3D Slicer and ITK-SNAP) reads the NIfTI and maps its voxels to
    the same LPS points as the DICOM series."""
    import SimpleITK as sitk  # a dev dependency: where it is missing the test fails, it does not skip
    volume = identified_volume
    image_path, _ = export_nifti(volume, document, tmp_path / "labels.nii.gz", pseudonymize=False)
    image = sitk.ReadImage(str(image_path))
    for z, y, x in [(0, 0, 0), (40, 511, 511), (25, 230, 150)]:
        assert image.TransformIndexToPhysicalPoint((x, y, z)) == pytest.approx(
            tuple(volume.index_to_patient(z, y, x)), abs=1e-3)
    array = sitk.GetArrayFromImage(image)  # ITK gives (z, y, x)
    assert np.array_equal(array == 1, lesion_mask(volume, document.lesions[0]))


def test_overlapping_readers_get_a_map_each_and_plain_export_keeps_identity(identified_volume, document, tmp_path, leak):
    volume = identified_volume
    copy = Lesion(reader="Dr. Reader Two", label="hcc", rois=list(document.lesions[0].rois))
    document.lesions.append(copy)
    paths = export_nifti(volume, document, tmp_path / "plain", pseudonymize=False)
    assert [p.name for p in paths] == ["plain-reader1.nii.gz", "plain-reader1.json", "plain-reader2.nii.gz",
                                       "plain-reader2.json"]
    first, second = json.loads(paths[1].read_text()), json.loads(paths[3].read_text())
    assert first["reader"] == "Dr. Reader One" and len(first["labels"]) == 3
    assert second["reader"] == "Dr. Reader Two" and second["labels"]["1"]["label"] == "hcc"
    voxels = int(lesion_mask(volume, copy).sum())
    assert first["labels"]["1"]["n_voxels"] == second["labels"]["1"]["n_voxels"] == voxels > 0
    leak.present(paths[3].read_text(), "plain NIfTI sidecar")


def test_csv_table(identified_volume, document, pseudonymizer, tmp_path, leak):
    volume = identified_volume
    document.lesions[0].note = "=HYPERLINK(\"x\")"  # notes are not exported, readers are
    document.lesions[1].reader = "=cmd|' /C calc'!A0"
    path = export_csv(volume, document, tmp_path / "lesions.csv", pseudonymizer=pseudonymizer)
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == list(CSV_COLUMNS)
    assert [row["lesion_id"] for row in rows] == [lesion.id for lesion in document.lesions]
    m = measure_lesion(volume, document.lesions[0])
    first = rows[0]
    assert first["label"] == "metastasis" and first["label_name"] == "Metastasis" and first["code_value"] == "14799000"
    assert first["slices"] == "23;24;25;26;27" and first["n_slices"] == "5"
    assert float(first["long_axis_mm"]) == pytest.approx(m.long_axis_mm, abs=0.05)
    assert float(first["volume_ml"]) == pytest.approx(m.volume_ml, abs=0.005)
    assert float(first["mean_hu"]) == pytest.approx(m.mean, abs=0.05)
    assert first["is_hu"] == "yes" and first["patient"].startswith("LV-") and first["patient_name"] == ""
    assert rows[2]["label"] == "" and rows[2]["label_name"] == "unlabelled"
    leak.absent(path.read_text(), "pseudonymised CSV")

    plain = export_csv(volume, document, tmp_path / "plain.csv", pseudonymize=False)
    with plain.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[1]["reader"].startswith("'=")  # a spreadsheet shows it as text instead of running it
    leak.present(plain.read_text(), "CSV without pseudonymisation")


def test_the_model_opinion_travels_with_the_lesion(identified_volume, document, pseudonymizer, tmp_path):
    """A classified lesion's AI result (and who accepted it) reaches the CSV and the training dataset."""
    from liverview.annotations.document import AIResult
    from liverview.annotations.export_dataset import export_dataset

    lesion = document.lesions[0]
    lesion.ai = AIResult("tiny 1.0 (abcdef123456)", {"benign_cyst": 0.1, "hemangioma": 0.05, "hcc": 0.05,
                                                     "metastasis": 0.8}, "metastasis", "2026-11-28T10:00:00+00:00",
                         accepted_by="Dr Ada", uncertainty="low", entropy=0.2, slice_index=25)
    path = export_csv(identified_volume, document, tmp_path / "lesions.csv", pseudonymizer=pseudonymizer)
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert rows[0]["ai_model"] == "tiny 1.0 (abcdef123456)" and rows[0]["ai_predicted"] == "metastasis"
    assert float(rows[0]["ai_probability"]) == pytest.approx(0.8)
    assert rows[0]["ai_accepted_by"] and rows[0]["ai_accepted_by"] != "Dr Ada"  # pseudonymised like readers
    assert rows[0]["ai_uncertainty"] == "low" and rows[0]["ai_outside_training"] == ""
    assert rows[1]["ai_model"] == ""
    # Review of real CT: an answer outside the training data lost that in the CSV and kept its percentage.
    lesion.ai = dataclasses.replace(lesion.ai, uncertainty="outside training data", phases_read=["arterial"],
                                    outside_training=["the image noise is 25 HU; the training images had 7-20 HU"])
    row = list(csv.DictReader(export_csv(identified_volume, document, tmp_path / "out.csv",
                                         pseudonymizer=pseudonymizer).open(encoding="utf-8")))[0]
    assert row["ai_probability"] == "" and row["ai_uncertainty"] == "outside training data"
    assert row["ai_outside_training"].startswith("the image noise is 25 HU") and row["ai_phases_read"] == "arterial"

    folder = tmp_path / "dataset"
    assert export_dataset(identified_volume, document, folder, pseudonymizer=pseudonymizer, labelled_only=False) == 3
    lines = [json.loads(line) for line in (folder / "lesions.jsonl").read_text().splitlines()]
    ai = next(line["ai"] for line in lines if line["lesion_id"] == lesion.id)
    assert ai["model_id"] == "tiny 1.0 (abcdef123456)" and ai["predicted"] == "metastasis"
    assert ai["probabilities"]["metastasis"] == pytest.approx(0.8)


def test_exports_name_each_lesion_as_the_app_does(identified_volume, document, tmp_path):
    """The table says L1, L2, …; the CSV and the NIfTI sidecar gave only ids (L13dd2163), so a CSV row could
    not be matched to the lesion on screen. With one reader's lesions chosen, the numbers stay the series'."""
    import csv

    from liverview.annotations.export import export_annotations
    from liverview.annotations.export_selection import ExportReaders, ReaderScope

    document.lesions[0].reader = "Dr Bob"  # L1 is Bob's; L2 and L3 are the other reader's
    other = document.lesions[1].reader
    chosen = ExportReaders(ReaderScope.READER, other)
    csv_path = export_annotations(identified_volume, document, "csv", tmp_path / "csv", readers=chosen).paths[0]
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(row["lesion_id"], row["lesion_number"]) for row in rows] == [
        (lesion.id, f"L{n}") for n, lesion in enumerate(document.lesions, start=1) if lesion.reader == other]
    nifti = export_annotations(identified_volume, document, "nifti", tmp_path / "nifti", readers=chosen).paths
    sidecar = json.loads(next(p for p in nifti if p.suffix == ".json").read_text())
    assert [entry["lesion_number"] for entry in sidecar["labels"].values()] == [row["lesion_number"] for row in rows]
