"""SEG import: round trip of our own SEG, the Frame-of-Reference fallback for SEGs whose image
references do not resolve, refusals with reasons, FRACTIONAL segmentations, and exact outlines."""
from __future__ import annotations

import copy

import highdicom as hd
import numpy as np
import pydicom
import pytest

from liverview.annotations.export_seg import export_seg, read_source_datasets
from liverview.annotations.labels import LabelTaxonomy
from liverview.annotations.measurements import lesion_mask, measure_lesion
from liverview.annotations.seg_description import SegmentNames, read_segment_description, write_segment_description
from liverview.annotations.seg_lesions import document_from_seg, import_seg_document
from liverview.imaging.outline import mask_to_polygons
from liverview.imaging.measure import polygon_mask
from liverview.io.seg_import import METHOD_POSITION, METHOD_SOP, SegImportError, import_seg


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture
def seg_path(identified_volume, document, tmp_path):
    """A SEG as it stays in the hospital: the source study, references to the images as they are."""
    return export_seg(identified_volume, document, tmp_path / "lesions.dcm", pseudonymize=False, reader="Dr. Reader One")


def rewrite(src, dst, *, fresh_references=False, frame_of_reference=None, shift_mm=0.0):
    """A copy of a SEG as it might arrive from elsewhere: references replaced by new UIDs (the images
    were anonymised), another Frame of Reference, or frames moved along z."""
    ds = pydicom.dcmread(src)
    if fresh_references:
        for frame in ds.PerFrameFunctionalGroupsSequence:
            for derivation in frame.DerivationImageSequence:
                for source in derivation.SourceImageSequence:
                    source.ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
        for series in ds.ReferencedSeriesSequence:
            series.SeriesInstanceUID = pydicom.uid.generate_uid()
            for item in series.ReferencedInstanceSequence:
                item.ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
        if "SourceImageSequence" in ds:
            del ds.SourceImageSequence
    if frame_of_reference:
        ds.FrameOfReferenceUID = frame_of_reference
    if shift_mm:
        for frame in ds.PerFrameFunctionalGroupsSequence:
            position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
            position[2] += shift_mm
            frame.PlanePositionSequence[0].ImagePositionPatient = position
    ds.save_as(dst)
    return dst


def test_round_trip_by_sop_instance_uid(identified_volume, document, seg_path):
    volume = identified_volume
    result = import_seg(seg_path, volume)
    assert result.method == METHOD_SOP and result.warnings == []
    assert result.segmentation_type == "BINARY" and len(result.segments) == 3

    imported = import_seg_document(seg_path, volume, LabelTaxonomy())
    assert imported.method == METHOD_SOP
    lesions = imported.document.lesions
    assert [lesion.label for lesion in lesions] == ["metastasis", "hemangioma", None]
    names = {"metastasis": "Metastasis", "hemangioma": "Hemangioma", None: "unlabelled"}
    for original, back in zip(document.lesions, lesions):
        assert dice(lesion_mask(volume, original), lesion_mask(volume, back)) >= 0.98
        assert back.slices() == original.slices()
        assert back.note == f"{names[original.label]} {original.id}"  # the Segment Label
        assert back.reader == "Dr. Reader One"  # the content creator, who drew them: they come back as hers
        assert all(roi.kind == "seg" for roi in back.rois)
        assert all(roi.sop_instance_uid == volume.sop_instance_uids[roi.slice_index] for roi in back.rois)
    assert imported.document.series_instance_uid == volume.series_uid


def test_a_seg_of_several_readers_comes_back_as_whose_it_was_and_measures_the_same(identified_volume, document,
                                                                                   tmp_path):
    """Walkthrough review: after Send to PACS and a retrieve, every lesion of a SEG of two readers came back
    as the sender's ("SEG: Dr New"), as new lesions, and 9-11 % smaller (outlines traced through the
    boundary pixels' centres). A foreign SEG's lesions stay marked as the SEG's."""
    volume = identified_volume
    second = copy.deepcopy(document.lesions[0])
    second.id, second.reader, second.label = "L0123abcd", "Dr. Reader Two", "hcc"
    document.lesions.append(second)
    path = export_seg(volume, document, tmp_path / "two.dcm", pseudonymize=False, reader="Dr. Sender")
    back = import_seg_document(path, volume, LabelTaxonomy()).document.lesions
    assert [(b.id, b.reader, b.label) for b in back] == [(o.id, o.reader, o.label) for o in document.lesions]
    for original, imported in zip(document.lesions, back):
        before, after = measure_lesion(volume, original), measure_lesion(volume, imported)
        assert after.area_mm2 == pytest.approx(before.area_mm2, rel=0.04)
        assert abs(after.long_axis_mm - before.long_axis_mm) <= max(volume.spacing_mm[1:])  # within a pixel
        assert after.n_voxels == before.n_voxels
    # One reader's lesions sent by another: still the reader's.
    del document.lesions[:3]
    alone = import_seg_document(export_seg(volume, document, tmp_path / "one.dcm", pseudonymize=False,
                                           reader="Dr. Sender"), volume, LabelTaxonomy()).document.lesions
    assert [(b.id, b.reader) for b in alone] == [(second.id, "Dr. Reader Two")]


def test_segment_descriptions_name_label_and_reader():
    assert write_segment_description("metastasis", None) == "liverview label metastasis"
    assert write_segment_description("hcc", "Dr B") == "liverview label hcc; reader Dr B"
    assert write_segment_description(None, "Dr B") == "liverview reader Dr B"
    assert write_segment_description(None, None) is None
    assert write_segment_description("hcc", "B" * 60) == "liverview label hcc"  # a name that would not fit
    assert read_segment_description("liverview label hcc; reader Dr B; C") == SegmentNames("hcc", "Dr B; C")
    assert read_segment_description("liverview reader Dr B") == SegmentNames(None, "Dr B")
    for foreign in ("Liver lesion", "liverview", "liverview label hccreader x", "liverview label HCC"):
        assert read_segment_description(foreign) == SegmentNames()


def test_pseudonymised_seg_is_one_study_with_its_deidentified_images(identified_volume, document, pseudonymizer,
                                                                     tmp_path, leak):
    """#16 defect 7: a pseudonymised SEG is not a hybrid: its study, series, frame of reference and
    image references all carry the one UID map that the de-identified images carry too."""
    from liverview.annotations.export import export_annotations
    from liverview.io import load_series

    result = export_annotations(identified_volume, document, "seg", tmp_path / "out", pseudonymizer=pseudonymizer,
                                with_images=True)
    seg_file, *images = result.paths
    assert len(images) == identified_volume.shape[0]
    for image in images:
        leak.absent(image.read_bytes(), "de-identified image")
    deidentified = load_series(images[0].parent)
    seg = pydicom.dcmread(seg_file)
    assert seg.StudyInstanceUID == deidentified.study_uid != identified_volume.study_uid
    assert seg.FrameOfReferenceUID == deidentified.frame_of_reference_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == deidentified.series_uid
    placed = import_seg(seg_file, deidentified)
    assert placed.method == METHOD_SOP and placed.warnings == []
    for original, segment in zip(document.lesions, placed.segments):
        assert dice(lesion_mask(identified_volume, original), segment.mask) == 1.0
    # Nothing of it resolves against the hospital's images without the installation's UID map, and the
    # refusal says why (it told the reader to open the series the SEG was made on: they had) ...
    with pytest.raises(SegImportError, match="Frame of Reference") as refused:
        import_seg(seg_file, identified_volume)
    assert "pseudonymised" in str(refused.value) and "Open the series the SEG was made on" not in str(refused.value)
    # ... and with it (the same reader importing their own export) it is placed by its references.
    back = import_seg(seg_file, identified_volume, uid_alias=pseudonymizer.remap_uid)
    assert back.method == METHOD_SOP and "UID map" in back.warnings[0]
    for original, segment in zip(document.lesions, back.segments):
        assert dice(lesion_mask(identified_volume, original), segment.mask) == 1.0


def test_anonymised_references_fall_back_to_frame_of_reference(identified_volume, document, seg_path, tmp_path):
    volume = identified_volume
    moved = rewrite(seg_path, tmp_path / "anon.dcm", fresh_references=True)
    result = import_seg(moved, volume)
    assert result.method == METHOD_POSITION
    assert any("Frame of Reference and position" in w for w in result.warnings)
    for original, segment in zip(document.lesions, result.segments):
        assert dice(lesion_mask(volume, original), segment.mask) >= 0.98


def test_other_frame_of_reference_is_refused(identified_volume, seg_path, tmp_path):
    other = rewrite(seg_path, tmp_path / "other.dcm", fresh_references=True,
                    frame_of_reference=pydicom.uid.generate_uid())
    with pytest.raises(SegImportError, match="Frame of Reference UID .* differs"):
        import_seg(other, identified_volume)


def test_positions_outside_the_volume_are_refused(identified_volume, seg_path, tmp_path):
    shifted = rewrite(seg_path, tmp_path / "shifted.dcm", fresh_references=True, shift_mm=1000.0)
    with pytest.raises(SegImportError, match="outside this series"):
        import_seg(shifted, identified_volume)


def test_foreign_segs_and_non_segs_are_refused_with_reasons(identified_volume, corpus_dir, identified_dir):
    with pytest.raises(SegImportError, match="Frame of Reference"):  # dcmqi liver SEG of another CT
        import_seg(corpus_dir / "pydicom-data" / "liver.dcm", identified_volume)
    with pytest.raises(SegImportError, match="96 of its 96 frames reference images that are not in this series, "
                                             "and its Frame of Reference UID"):  # TCIA brain MR SEG
        import_seg(corpus_dir / "orthanc-tests" / "DicomSeg.dcm", identified_volume)
    with pytest.raises(SegImportError, match="not a DICOM SEG"):
        import_seg(identified_dir / "1-01.dcm", identified_volume)


def test_fractional_seg_is_thresholded_at_half(identified_volume, document, tmp_path):
    volume = identified_volume
    lesion = document.lesions[0]
    mask = lesion_mask(volume, lesion)
    grown = np.zeros_like(mask)
    for z in range(mask.shape[0]):
        grown[z] = np.pad(mask[z], 2)[:-4, 2:-2] | mask[z]  # a rim of low probability around it
    probability = np.where(mask, 0.8, np.where(grown, 0.3, 0.0)).astype(np.float32)
    sources, _ = read_source_datasets(volume)
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="probability", algorithm_type="AUTOMATIC",
        algorithm_identification=hd.AlgorithmIdentificationSequence("test", hd.sr.CodedConcept("123", "99X", "x"), "1"),
        segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Abnormal Structure"),
        segmented_property_type=hd.sr.CodedConcept("14799000", "SCT", "Neoplasm, metastatic"))
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=probability, segmentation_type="FRACTIONAL",
        segment_descriptions=[description], series_instance_uid=hd.UID(), series_number=1, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="test", manufacturer_model_name="test", software_versions="1",
        device_serial_number="1", max_fractional_value=255)
    seg.save_as(tmp_path / "fractional.dcm")
    result = import_seg(tmp_path / "fractional.dcm", volume)
    assert result.segmentation_type == "FRACTIONAL" and result.method == METHOD_SOP
    assert np.array_equal(result.segments[0].mask, mask)
    document = document_from_seg(result, volume)
    assert document.lesions[0].label == "metastasis" and document.lesions[0].reader == "SEG: test"


@pytest.mark.parametrize("pixels", [
    [(5, 5)],                                       # a single pixel
    [(5, 5), (6, 6), (7, 7)],                       # touching only at corners
    [(y, x) for y in range(3, 12) for x in range(3, 6)] + [(y, x) for y in range(9, 12) for x in range(6, 14)],
    [(y, x) for y in range(2, 15) for x in range(2, 15) if (y - 8) ** 2 + (x - 8) ** 2 <= 30],
])
def test_traced_outlines_give_back_exactly_the_pixels(pixels):
    mask = np.zeros((20, 20), dtype=bool)
    for y, x in pixels:
        mask[y, x] = True
    back = np.zeros_like(mask)
    for outline in mask_to_polygons(mask):
        back |= polygon_mask(outline, mask.shape)
    assert np.array_equal(back, mask)


def test_a_readers_own_pseudonymised_seg_comes_back_under_their_name(identified_volume, document, tmp_path):
    """Walkthrough step 13: a reader importing the SEG they exported pseudonymised got their lesions back as
    "reader-31512e" (a stranger to the consensus) instead of under their own name."""
    from liverview.annotations.deid import Pseudonymizer
    from liverview.annotations.export import export_annotations

    own = Pseudonymizer.from_user_key()
    reader = document.lesions[0].reader
    result = export_annotations(identified_volume, document, "seg", tmp_path / "out", pseudonymizer=own)
    seg_file = result.paths[0]
    assert reader not in pydicom.dcmread(seg_file).ContentCreatorName
    anonymous = import_seg_document(seg_file, identified_volume)
    assert {lesion.reader for lesion in anonymous.document.lesions} == {own.reader_pseudonym(reader)}
    named = import_seg_document(seg_file, identified_volume, known_readers=["Dr Somebody Else", reader])
    assert {lesion.reader for lesion in named.document.lesions} == {reader}
