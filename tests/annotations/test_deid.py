"""Pseudonymisation: the key file, stable pseudonyms and UIDs, and the Basic Profile on a real CT header."""
from __future__ import annotations

import datetime as dt
import os
import re
import stat

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from liverview.annotations.deid import KEY_FILE_NAME, PseudonymKeyError, Pseudonymizer, load_or_create_key
from liverview.paths import user_data_dir


def test_key_is_created_once_private_and_reused(_private_user_data):
    first = Pseudonymizer.from_user_key()
    key_file = user_data_dir() / KEY_FILE_NAME
    assert key_file.exists()
    assert re.fullmatch(r"[0-9a-f]{64}", key_file.read_text().strip())
    if os.name == "posix":
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = Pseudonymizer.from_user_key()
    assert first.patient_pseudonym("CRLM-CT-1004") == again.patient_pseudonym("CRLM-CT-1004")
    assert [p.name for p in key_file.parent.iterdir() if p.name.startswith(".pseudonym")] == []


def test_damaged_key_is_an_error_not_a_new_key(tmp_path):
    key = tmp_path / KEY_FILE_NAME
    key.write_text("not hex at all")
    with pytest.raises(PseudonymKeyError, match="damaged"):
        load_or_create_key(key)
    assert key.read_text() == "not hex at all"


def test_pseudonyms_are_stable_keyed_and_well_formed():
    a, b = Pseudonymizer(b"secret-a" * 4), Pseudonymizer(b"secret-b" * 4)
    pid = "CRLM-CT-1004"
    assert re.fullmatch(r"LV-[0-9A-F]{10}", a.patient_pseudonym(pid))
    assert a.patient_pseudonym(pid) == a.patient_pseudonym(pid)
    assert a.patient_pseudonym(pid) != a.patient_pseudonym("CRLM-CT-1005")
    assert a.patient_pseudonym(pid) != b.patient_pseudonym(pid)
    assert a.reader_pseudonym("Dr. X") == a.reader_pseudonym("Dr. X") != a.reader_pseudonym("Dr. Y")
    uid = "1.3.6.1.4.1.14519.5.2.1.9203.8273.319461848560755521018609264462"
    remapped = a.remap_uid(uid)
    assert remapped == a.remap_uid(uid) != b.remap_uid(uid) and remapped != uid
    assert re.fullmatch(r"[0-9.]{1,64}", remapped)
    offset = a.date_offset_days(pid)
    assert -3650 <= offset <= -365
    assert a.shift_date("19941122", pid) == (dt.date(1994, 11, 22) + dt.timedelta(days=offset)).strftime("%Y%m%d")
    assert a.shift_date("19941122101500.5", pid).endswith("101500.5")
    assert a.shift_date("garbage!", pid) == ""


def _identified_ct(crlm_dir) -> Dataset:
    ds = pydicom.dcmread(crlm_dir / "1-01.dcm", stop_before_pixels=True)
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-4711"
    ds.PatientBirthDate = "19560714"
    ds.PatientAddress = "1 Main Street"
    ds.InstitutionName = "St. Example Hospital"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.OperatorsName = "Tech^Tina"
    ds.StationName = "CT01"
    ds.DeviceSerialNumber = "SN-123"
    ds.AccessionNumber = "ACC1"
    ds.ImageComments = "call Jane Doe"
    item = Dataset()
    item.PerformingPhysicianName = "Nested^Name"
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ReferencedPerformedProcedureStepSequence = Sequence([item])
    return ds


def test_basic_profile_on_a_real_ct_header(crlm_dir):
    p = Pseudonymizer(b"k" * 32)
    ds = _identified_ct(crlm_dir)
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    study_date, series_date = ds.StudyDate, ds.SeriesDate
    assert any(e.tag.is_private for e in ds)
    p.deidentify_dataset(ds)

    pseudonym = p.patient_pseudonym("MRN-4711")
    assert ds.PatientID == pseudonym and str(ds.PatientName).rstrip("^") == pseudonym
    assert ds.PatientBirthDate == "" and ds.AccessionNumber == "" and ds.ReferringPhysicianName == ""
    assert ds.PatientSex == ""  # Basic Profile Z unless the characteristics option is chosen
    for keyword in ("PatientAddress", "InstitutionName", "OperatorsName", "StationName", "ImageComments",
                    "PatientAge", "AdditionalPatientHistory", "StudyDescription", "SeriesDescription",
                    "ProcedureCodeSequence", "ProtocolName"):
        assert keyword not in ds, keyword
    assert ds.DeviceSerialNumber == "0"
    assert not any(e.tag.is_private for e in ds)
    assert "PerformingPhysicianName" not in ds.ReferencedPerformedProcedureStepSequence[0]
    # Dates shifted by the same per-patient offset: intervals survive.
    offset = dt.timedelta(days=p.date_offset_days("MRN-4711"))
    assert ds.StudyDate == (dt.datetime.strptime(study_date, "%Y%m%d") + offset).strftime("%Y%m%d")
    assert ds.SeriesDate == (dt.datetime.strptime(series_date, "%Y%m%d") + offset).strftime("%Y%m%d")
    # "study": only the object's own Study UID changes; references and image UIDs stay.
    assert ds.StudyInstanceUID == p.remap_uid(study)
    assert (ds.SeriesInstanceUID, ds.SOPInstanceUID) == (series, sop)
    assert ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    assert ds.PatientIdentityRemoved == "YES"
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100" and "113107" in codes
    text = str(ds)
    for secret in ("Doe", "MRN-4711", "19560714", "House", "Tech^Tina", "St. Example", "SN-123"):
        assert secret not in text, secret


def test_all_uids_remapped_consistently_and_characteristics_kept(crlm_dir):
    p = Pseudonymizer(b"k" * 32)
    ds = _identified_ct(crlm_dir)
    ds.file_meta = pydicom.dcmread(crlm_dir / "1-01.dcm", stop_before_pixels=True).file_meta
    sop, ref = ds.SOPInstanceUID, ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID
    p.deidentify_dataset(ds, uids="all", keep_patient_characteristics=True)
    assert ds.SOPInstanceUID == p.remap_uid(sop) == ds.file_meta.MediaStorageSOPInstanceUID
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == p.remap_uid(ref)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.PatientSex == "M" and ds.PatientAge == "038Y"
    assert "113108" in [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
