"""The whole clinical round trip against a real Orthanc: query, retrieve by C-GET and by C-MOVE, open,
classify a lesion, send SEG + SR into the same study, find them there, retrieve the SEG and import it."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from orthanc_server import node_for, start_orthanc

from liverview.annotations.annotated_study import read_annotation_json
from liverview.annotations.export_seg import export_seg
from liverview.annotations.export_sr import export_sr
from liverview.annotations.measurements import lesion_mask
from liverview.io import load_series
from liverview.io.seg_import import import_seg
from liverview.net.node import RetrieveMethod
from liverview.net.pacs_cli import main
from liverview.net.query import StudyQuery, find_series, find_studies
from liverview.net.retrieve import SeriesProgress, retrieve_study
from liverview.net.send import send_files

ANNOTATIONS = Path(__file__).resolve().parents[1] / "data" / "crlm-ct-1004-metastases.json"
SEG_CLASS, CT_CLASS = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def crlm_pacs(tmp_path, crlm_dir):
    """An Orthanc of this test alone holding crlm-ct-1004 (SEG and SR are sent into its study)."""
    server = start_orthanc(tmp_path / "orthanc")
    server.upload(sorted(crlm_dir.glob("*.dcm")))
    yield server
    server.stop(graceful=False)


@pytest.mark.parametrize("method", [RetrieveMethod.GET, RetrieveMethod.MOVE])
def test_retrieve_and_open_demo_and_crlm(node, cache, demo_study, crlm_dir, method):
    for query, n_images in ((StudyQuery(patient_name="DEMO*"), 60), (StudyQuery(patient_id="CRLM-CT-1004"), 41)):
        (study,) = find_studies(node, query)
        updates: list[SeriesProgress] = []
        result = retrieve_study(node, study.study_uid, cache, method=method, report=updates.append)
        ((series, path),) = result.series
        assert path == cache.series_dir(study.study_uid, series.series_uid)
        assert [u.received for u in updates if u.path is None] == list(range(1, n_images + 1))
        assert updates[-1].path == path
        volume = load_series(path)
        assert volume.shape[0] == n_images and volume.study_uid == study.study_uid and volume.is_hu
    # The retrieved crlm-ct-1004 is the shared one, image for image.
    original = {pydicom.dcmread(p).SOPInstanceUID: p.read_bytes()[-4096:] for p in crlm_dir.glob("*.dcm")}
    crlm_study = find_studies(node, StudyQuery(patient_id="CRLM-CT-1004"))[0].study_uid
    for path in cache.study_dir(crlm_study).rglob("*.dcm"):
        assert path.read_bytes()[-4096:] == original[path.stem]


def test_classify_send_seg_and_sr_find_them_in_the_study_and_import_the_seg(crlm_pacs, cache, tmp_path):
    from liverview.model.classify import classify_lesion, load_model_with_fallback
    from liverview.paths import default_model_path

    node = node_for(crlm_pacs)
    (study,) = find_studies(node, StudyQuery(patient_name="CRLM*", modality="CT"))
    retrieved = retrieve_study(node, study.study_uid, cache)
    volume = load_series(retrieved.series[0][1])
    document = read_annotation_json(ANNOTATIONS)
    loaded, _ = load_model_with_fallback(default_model_path(), "cpu")
    prediction = classify_lesion(loaded, volume, document.lesions[0], heatmap=False)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)

    seg = export_seg(volume, document, tmp_path / "seg.dcm", pseudonymize=False)
    sr = export_sr(volume, document, tmp_path / "sr.dcm", pseudonymize=False)
    results = send_files(node, [seg, sr])
    assert [r.accepted for r in results] == [True, True]
    assert results[0].message == "SEG “liverview lesions”: stored on test PACS."

    (again,) = find_studies(node, StudyQuery(patient_id="CRLM-CT-1004"))
    assert again.study_uid == study.study_uid and set(again.modalities) == {"CT", "SEG", "SR"}
    series = find_series(node, study.study_uid)
    assert sorted(s.modality for s in series) == ["CT", "SEG", "SR"]
    # The whole study, SEG and SR included, retrieves: each series proposes the SOP classes it holds.
    everything = retrieve_study(node, study.study_uid, cache)
    assert sorted(m.sop_classes[0] for m, _ in everything.series)[:2] == [CT_CLASS, SEG_CLASS]
    (seg_path,) = next(path for m, path in everything.series if m.modality == "SEG").iterdir()

    imported = import_seg(seg_path, volume)
    assert len(imported.segments) == len(document.lesions)
    for lesion, segment in zip(document.lesions, imported.segments, strict=True):
        expected = lesion_mask(volume, lesion)
        dice = 2 * np.sum(expected & segment.mask) / (expected.sum() + segment.mask.sum())
        assert dice == 1.0


def test_cli_get_by_c_get_and_c_move_and_send(crlm_pacs, crlm_dir, tmp_path, capsys):
    address = f"127.0.0.1:{crlm_pacs.dicom_port}:ORTHANC"
    assert main(["--pacs", address, "find", "--json"]) == 0
    study_uid = json.loads(capsys.readouterr().out)["studies"][0]["study_uid"]
    assert main(["--pacs", address, "get", study_uid, "--out", str(tmp_path / "get")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "stored 41 of 41 images in 1 series"
    assert main(["--pacs", address, "get", study_uid, "--out", str(tmp_path / "move"), "--move",
                 "--port", str(crlm_pacs.move_port)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "stored 41 of 41 images in 1 series"
    assert len(list((tmp_path / "move" / "studies" / study_uid).rglob("*.dcm"))) == 41

    assert main(["--pacs", address, "get", study_uid, "--out", str(tmp_path / "x"), "--series", "1.2.3"]) == 1
    assert "has no series 1.2.3" in capsys.readouterr().err
    # Unknown move destination (Orthanc cannot reach liverview on that port): exit 1 with the sentence.
    assert main(["--pacs", address, "get", study_uid, "--out", str(tmp_path / "x"), "--move", "--port",
                 str(crlm_pacs.move_port + 1)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"stored 0 of 41 images", err) and "does not know where to send the images" in err

    seg_ds = pydicom.dcmread(next(crlm_dir.glob("*.dcm")))
    seg_ds.SOPInstanceUID = pydicom.uid.generate_uid()
    seg_ds.save_as(tmp_path / "copy.dcm")
    assert main(["--pacs", address, "send", str(tmp_path / "copy.dcm")]) == 0
    assert "stored on 127.0.0.1" in capsys.readouterr().out
    assert crlm_pacs.instance_count() == 42
    # A folder, as an export writes one: its files are sent, the rest named ("Is a directory" before).
    folder = tmp_path / "export"
    folder.mkdir()
    seg_ds.SOPInstanceUID = pydicom.uid.generate_uid()
    seg_ds.save_as(folder / "second.dcm")
    (folder / "report.txt").write_text("not DICOM")
    os.mkfifo(folder / "pipe.dcm")  # read by pydicom, it waited for a writer for ever
    assert main(["--pacs", address, "send", str(folder)]) == 0
    out = capsys.readouterr()
    assert "stored on 127.0.0.1" in out.out and "not sent: " in out.err and "report.txt" in out.err
    assert f"not sent: {folder / 'pipe.dcm'}: not a regular file" in out.err
    assert crlm_pacs.instance_count() == 43
