"""C-ECHO and C-FIND against a real Orthanc, through the library and the `liverview-pacs` command."""
from __future__ import annotations

import datetime as dt
import json

from liverview.net.pacs_cli import main
from liverview.net.query import DatePreset, StudyQuery, date_range_for, find_images, find_series, find_studies
from liverview.net.verify import verify_node

CRLM_STUDY = "1.3.6.1.4.1.14519.5.2.1.9203.8273.319461848560755521018609264462"


def test_echo_answers_in_words(node):
    result = verify_node(node)
    assert result.message.startswith("The PACS test PACS (ORTHANC@127.0.0.1:")
    assert "answered the echo" in result.message


def test_find_by_name_with_wildcards_date_range_and_modality(node, demo_study):
    by_name = find_studies(node, StudyQuery(patient_name="DEMO^*"))
    assert [s.study_uid for s in by_name] == [demo_study.study_instance_uid]
    demo = by_name[0]
    assert demo.patient_name == "DEMO^Hepatica" and demo.patient_id == "LV-DEMO-0001"
    assert demo.modalities == ("CT",) and demo.n_series == 1 and demo.n_instances == 60
    assert demo.study_date == "20261128"

    assert [s.study_uid for s in find_studies(node, StudyQuery(study_date="19941101-19941130"))] == [CRLM_STUDY]
    assert find_studies(node, StudyQuery(study_date="19950101-")) == [demo]
    assert {s.study_uid for s in find_studies(node, StudyQuery(modality="CT"))} == {CRLM_STUDY, demo.study_uid}
    assert find_studies(node, StudyQuery(modality="MR")) == []
    assert find_studies(node, StudyQuery(modality="ct")) == find_studies(node, StudyQuery(modality="CT"))
    assert [s.patient_id for s in find_studies(node, StudyQuery(patient_id="CRLM-CT-1004"))] == ["CRLM-CT-1004"]
    crlm = find_studies(node, StudyQuery(patient_name="crlm*"))  # Orthanc matches names case-insensitively
    assert [s.study_description for s in crlm] == ["CT CH/ABD/PEL W/ CONTRAST"]


def test_series_and_image_level(node):
    (series,) = find_series(node, CRLM_STUDY)
    assert series.modality == "CT" and series.n_instances == 41 and series.series_number == 2
    assert series.sop_classes == ("1.2.840.10008.5.1.4.1.1.2",)  # CT Image Storage
    images = find_images(node, CRLM_STUDY, series.series_uid)
    assert len(images) == 41 and len({i.sop_instance_uid for i in images}) == 41
    assert all(i.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2" for i in images)
    assert len({i.instance_number for i in images}) == 41


def test_date_presets():
    today = dt.date(2026, 12, 6)
    assert date_range_for(DatePreset.TODAY, today) == "20261206"
    assert date_range_for(DatePreset.YESTERDAY, today) == "20261205"
    assert date_range_for(DatePreset.LAST_WEEK, today) == "20261129-20261206"
    assert date_range_for(DatePreset.LAST_MONTH, today) == "20261105-20261206"
    assert date_range_for(DatePreset.ANY, today) == ""


def test_cli_echo_and_find_json(pacs, capsys):
    address = f"127.0.0.1:{pacs.dicom_port}:ORTHANC"
    assert main(["--pacs", address, "echo"]) == 0
    assert "answered the echo" in capsys.readouterr().out
    assert main(["--pacs", address, "find", "--modality", "CT", "--date", "19940101-19941231", "--json"]) == 0
    studies = json.loads(capsys.readouterr().out)["studies"]
    assert studies == [{"study_uid": CRLM_STUDY, "patient_name": "CRLM-CT-1004", "patient_id": "CRLM-CT-1004",
                        "study_date": "19941122", "accession_number": "", "modalities": ["CT"],
                        "study_description": "CT CH/ABD/PEL W/ CONTRAST", "n_series": 1, "n_instances": 41}]


def test_cli_says_why_it_failed(pacs, capsys):
    assert main(["--pacs", f"127.0.0.1:{pacs.dicom_port}:NOT-ORTHANC", "echo"]) == 1
    err = capsys.readouterr().err
    assert "does not answer to the AE title 'NOT-ORTHANC'" in err and "Traceback" not in err
    assert main(["--pacs", "127.0.0.1:x", "echo"]) == 1
    assert "is not HOST:PORT" in capsys.readouterr().err


def test_a_name_beyond_latin_1_finds_its_patient_only_and_comes_back_whole(crlm_dir, hcc_dir, tmp_path):
    """PACS review: the query had no character set, so "Иван*" went out as "????*", whose wildcards matched
    every patient. (A PACS answers in its own encoding: this Orthanc is set to UTF-8, as its default
    Latin-1 would drop the Cyrillic letters from the answer whatever the query asked.)"""
    import pydicom
    from orthanc_server import node_for, start_orthanc

    folder = tmp_path / "cyrillic"
    folder.mkdir()
    study = pydicom.uid.generate_uid()
    series = pydicom.uid.generate_uid()
    for path in sorted(crlm_dir.glob("*.dcm"))[:3]:
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName, ds.PatientID = "Иванов^Łukasz", "CYR-1"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SeriesDescription = "Печень"
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / path.name)
    own_pacs = start_orthanc(tmp_path / "orthanc", DefaultEncoding="Utf8")
    try:
        own_pacs.upload(sorted(folder.glob("*.dcm")) + sorted(hcc_dir.glob("*.dcm"))[:2])
        _find_cyrillic(node_for(own_pacs), study)
    finally:
        own_pacs.stop(graceful=False)


def _find_cyrillic(node, study):
    from liverview.net.query import find_series

    found = find_studies(node, StudyQuery(patient_name="Иван*"))
    assert [(s.study_uid, s.patient_name) for s in found] == [(study, "Иванов^Łukasz")]
    assert len(find_studies(node, StudyQuery())) == 2  # the arterial study is there too
    assert [s.series_description for s in find_series(node, study)] == ["Печень"]
