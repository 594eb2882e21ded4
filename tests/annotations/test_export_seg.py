"""DICOM SEG export on the real CT: valid for dciodvfy, readable by pydicom and highdicom, references
the real images, and pseudonymised unless asked not to be."""
from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest

from liverview import __version__
from liverview.annotations.document import AnnotationDocument, Lesion, Roi
from liverview.annotations.export_common import ExportError
from liverview.annotations.export_seg import export_seg
from liverview.annotations.measurements import lesion_mask


def test_seg_is_valid_and_reads_back(identified_volume, document, pseudonymizer, tmp_path, dciodvfy, leak):
    volume = identified_volume
    path = export_seg(volume, document, tmp_path / "lesions.dcm", pseudonymizer=pseudonymizer)

    lines = dciodvfy(path)
    errors = [line for line in lines if line.startswith("Error")]
    assert errors == [], "\n".join(lines)

    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.SegmentationType == "BINARY"
    assert ds.Manufacturer == "liverview" and ds.SeriesDescription == "liverview lesions"
    assert ds.SoftwareVersions == __version__
    assert len(ds.SegmentSequence) == 3
    # Empty frames are omitted: one frame per (segment, slice with an outline).
    assert ds.NumberOfFrames == sum(len(lesion.slices()) for lesion in document.lesions)

    first, second, third = ds.SegmentSequence
    assert first.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == "14799000"  # metastasis
    assert second.SegmentedPropertyTypeCodeSequence[0].CodeValue == "400210000"  # hemangioma
    assert third.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"  # unlabelled: generic lesion
    assert first.AnatomicRegionSequence[0].CodeValue == "10200004"
    assert first.SegmentLabel == f"Metastasis {document.lesions[0].id}"
    assert first.TrackingID == document.lesions[0].id

    # Pseudonymised, every UID is remapped with one map: the SEG belongs to the pseudonymised study and
    # references its images as `export_deidentified_images` writes them (#16 defect 7: no hybrid).
    remap = pseudonymizer.remap_uid
    referenced = {item.ReferencedSOPInstanceUID
                  for item in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == remap(volume.series_uid)
    assert referenced == {remap(uid) for uid in volume.sop_instance_uids}
    assert not referenced & set(volume.sop_instance_uids)
    for frame in ds.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert uid in referenced
    assert ds.FrameOfReferenceUID == remap(volume.frame_of_reference_uid)
    # Pseudonymised: the SEG's own study UID is remapped, patient replaced.
    assert ds.StudyInstanceUID == pseudonymizer.remap_uid(volume.study_uid)
    assert ds.PatientID == pseudonymizer.patient_pseudonym("MRN-4711-0815") and ds.PatientBirthDate == ""
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert ds.ContentCreatorName.family_name.startswith("reader-")
    leak.absent(path.read_bytes(), "pseudonymised SEG")

    # highdicom reads it and gives back the masks per source image.
    seg = hd.seg.segread(path)
    assert seg.number_of_segments == 3
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[remap(u) for u in volume.sop_instance_uids],
                                               segment_numbers=[1, 2, 3], combine_segments=False)
    for k, lesion in enumerate(document.lesions):
        assert np.array_equal(pixels[..., k].astype(bool), lesion_mask(volume, lesion))


def test_seg_without_pseudonymisation_keeps_study(identified_volume, document, tmp_path, dciodvfy, leak):
    path = export_seg(identified_volume, document, tmp_path / "plain.dcm", pseudonymize=False, reader="Dr. Reader One")
    assert [line for line in dciodvfy(path) if line.startswith("Error")] == []
    ds = pydicom.dcmread(path)
    assert ds.StudyInstanceUID == identified_volume.study_uid
    assert str(ds.PatientName) == "Doe^Jane^Q" and ds.PatientID == "MRN-4711-0815"
    assert "Dr. Reader One" in str(ds.ContentCreatorName)
    leak.present(path.read_bytes(), "SEG without pseudonymisation")


def test_seg_refuses_nothing_to_export_and_wrong_series(identified_volume, tmp_path):
    volume = identified_volume
    empty = AnnotationDocument(volume.study_uid, volume.series_uid)
    empty.lesions.append(Lesion(reader="x", rois=[Roi(99, [(1, 1), (5, 1), (5, 5)])]))  # off the series
    with pytest.raises(ExportError, match="no lesion has an outline"):
        export_seg(volume, empty, tmp_path / "x.dcm", pseudonymize=False)
    other = AnnotationDocument(volume.study_uid, "1.2.3.4.5")
    with pytest.raises(ExportError, match="belong to series 1.2.3.4.5"):
        export_seg(volume, other, tmp_path / "x.dcm", pseudonymize=False)
    assert not (tmp_path / "x.dcm").exists()


def test_measurement_sr_is_valid_and_pseudonymised(identified_volume, document, pseudonymizer, tmp_path, dciodvfy,
                                                   leak):
    from liverview.annotations.export_sr import export_sr
    from liverview.annotations.measurements import measure_lesion

    path = export_sr(identified_volume, document, tmp_path / "sr.dcm", pseudonymizer=pseudonymizer)
    lines = dciodvfy(path)
    assert [line for line in lines if line.startswith("Error")] == [], "\n".join(lines)
    leak.absent(path.read_bytes(), "pseudonymised SR")
    sr = hd.sr.srread(path)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 3
    expected = measure_lesion(identified_volume, document.lesions[0])
    values = {m.name.meaning: m.value for m in groups[0].get_measurements()}
    assert values["Long axis"] == pytest.approx(expected.long_axis_mm, rel=1e-6)
    assert values["Volume"] == pytest.approx(expected.volume_ml, rel=1e-6)
    assert values["Mean"] == pytest.approx(expected.mean, rel=1e-6)
    assert str(groups[0].finding_type.value) == "14799000"
    # Outlines reference the CT slices through the same UID map as the SEG and the de-identified images.
    region = groups[0].roi[0] if isinstance(groups[0].roi, list) else groups[0].roi
    source = region.ContentSequence[0].ReferencedSOPSequence[0]  # "selected from" IMAGE item
    assert source.ReferencedSOPInstanceUID in {pseudonymizer.remap_uid(u) for u in identified_volume.sop_instance_uids}
