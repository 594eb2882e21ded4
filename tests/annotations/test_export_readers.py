"""What leaves the app is what the readers decided: consensus, one reader, or every reader (issue #16,
defects 1 and 2), on the real crlm-ct-1004 series with two readers who outlined the same three lesions."""
from __future__ import annotations

import csv
import json
import re

import nibabel as nib
import numpy as np
import pydicom
import pytest

from liverview.annotations.document import Adjudication, Lesion, Roi
from liverview.annotations.export import export_annotations
from liverview.annotations.export_common import ExportError
from liverview.annotations.export_selection import ExportReaders, ReaderScope, default_readers, select_for_export
from liverview.annotations.measurements import lesion_mask

ONE, TWO, CHIEF = "Dr. Reader One", "Dr. Reader Two", "Dr. Chief"
#: Reader two's labels for reader one's three lesions: disagrees on the first, agrees on the second.
SECOND_LABELS = ("hemangioma", "hemangioma", None)


@pytest.fixture
def two_readers(identified_volume, draw):
    document = draw(identified_volume)
    for lesion, label in zip(list(document.lesions), SECOND_LABELS):
        rois = [Roi(r.slice_index, [(x + 2.0, y + 1.0) for x, y in r.points_xy], sop_instance_uid=r.sop_instance_uid)
                for r in lesion.rois]
        document.lesions.append(Lesion(reader=TWO, label=label, rois=rois))
    first_one, first_two = document.lesions[0], document.lesions[3]
    document.adjudications.append(Adjudication([first_one.id, first_two.id], "metastasis", CHIEF))
    return document


def _export(volume, document, fmt, tmp_path, **kwargs):
    return export_annotations(volume, document, fmt, tmp_path / fmt, pseudonymize=False, **kwargs)


def test_consensus_is_the_default_once_a_label_was_adjudicated(two_readers):
    assert default_readers(two_readers).scope is ReaderScope.CONSENSUS
    two_readers.adjudications.clear()
    assert default_readers(two_readers).scope is ReaderScope.ALL_READERS


def test_consensus_seg_has_one_segment_per_finding_with_the_final_label(identified_volume, two_readers, tmp_path):
    result = _export(identified_volume, two_readers, "seg", tmp_path)
    seg = pydicom.dcmread(result.paths[0])
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert len(labels) == 3 and result.n_lesions == 3
    assert labels[0].startswith("Metastasis consensus") and labels[1].startswith("Hemangioma consensus")
    assert labels[2].startswith("unlabelled consensus")


def test_consensus_csv_names_who_decided(identified_volume, two_readers, tmp_path):
    path = _export(identified_volume, two_readers, "csv", tmp_path).paths[0]
    rows = list(csv.DictReader(path.open()))
    assert [r["label"] for r in rows] == ["metastasis", "hemangioma", ""]
    assert rows[0]["decided_by"] == CHIEF and rows[0]["label_source"] == "adjudicated"
    assert rows[0]["readers"] == f"{ONE};{TWO}"
    assert rows[1]["decided_by"] == "" and rows[1]["label_source"] == "readers agree"
    assert rows[2]["label_source"] == "readers disagree"


def test_consensus_dataset_has_one_patch_per_decided_finding(identified_volume, two_readers, tmp_path):
    _export(identified_volume, two_readers, "dataset", tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "dataset" / "lesions.jsonl").read_text().splitlines()]
    assert sorted(line["label"] for line in lines) == ["hemangioma", "metastasis"]
    assert {line["decided_by"] for line in lines} == {CHIEF, None}


def test_consensus_outline_is_a_real_readers_outline(identified_volume, two_readers):
    selected = select_for_export(two_readers, identified_volume, ExportReaders(ReaderScope.CONSENSUS))
    originals = {lesion.id: lesion for lesion in two_readers.lesions}
    for lesion in selected.lesions:
        source = originals[lesion.consensus.outline_of]
        assert np.array_equal(lesion_mask(identified_volume, lesion), lesion_mask(identified_volume, source))
        assert sorted(lesion.consensus.readers) == [ONE, TWO]
        # Who outlined it (docs/dataset-format.md), not who adjudicated its label: that is `decided_by`.
        assert lesion.reader == source.reader
    assert [lesion.label for lesion in two_readers.lesions[:3]] == ["metastasis", "hemangioma", None]


def test_all_readers_seg_names_each_segments_reader(identified_volume, two_readers, tmp_path):
    result = _export(identified_volume, two_readers, "seg", tmp_path, readers=ExportReaders(ReaderScope.ALL_READERS))
    labels = [s.SegmentLabel for s in pydicom.dcmread(result.paths[0]).SegmentSequence]
    assert len(labels) == 6
    assert sum(ONE in label for label in labels) == 3 and sum(TWO in label for label in labels) == 3


def test_one_readers_export_holds_only_their_lesions(identified_volume, two_readers, tmp_path):
    path = _export(identified_volume, two_readers, "csv", tmp_path, readers=ExportReaders(ReaderScope.READER, TWO)).paths[0]
    rows = list(csv.DictReader(path.open()))
    assert [r["reader"] for r in rows] == [TWO] * 3
    assert [r["label"] for r in rows] == ["hemangioma", "hemangioma", ""]
    with pytest.raises(ExportError, match="no lesion"):
        _export(identified_volume, two_readers, "csv", tmp_path, readers=ExportReaders(ReaderScope.READER, "nobody"))


def test_nifti_of_every_reader_loses_no_voxel(identified_volume, two_readers, tmp_path):
    result = _export(identified_volume, two_readers, "nifti", tmp_path, readers=ExportReaders(ReaderScope.ALL_READERS))
    images = [p for p in result.paths if p.name.endswith(".nii.gz")]
    assert len(images) == 2
    for image_path in images:
        sidecar = json.loads(image_path.with_name(image_path.name.replace(".nii.gz", ".json")).read_text())
        labels = np.asarray(nib.load(image_path).dataobj).transpose(2, 1, 0)
        lesions = [lesion for lesion in two_readers.lesions if lesion.reader == sidecar["reader"]]
        assert len(lesions) == 3
        for k, lesion in enumerate(lesions, start=1):
            mask = lesion_mask(identified_volume, lesion)
            assert np.array_equal(labels == k, mask)
            assert sidecar["labels"][str(k)]["n_voxels"] == int(mask.sum()) > 0


def test_nifti_refuses_overlapping_lesions_of_one_reader(identified_volume, draw, tmp_path):
    document = draw(identified_volume)
    first = document.lesions[0]
    document.lesions.append(Lesion(reader=first.reader, label="hemangioma",
                                   rois=[Roi(r.slice_index, r.points_xy, sop_instance_uid=r.sop_instance_uid)
                                         for r in first.rois]))
    with pytest.raises(ExportError, match="overlaps"):
        _export(identified_volume, document, "nifti", tmp_path)
    assert not (tmp_path / "nifti").exists() or not any((tmp_path / "nifti").iterdir())


def test_a_training_dataset_never_takes_two_readers_conflicting_labels(identified_volume, two_readers, tmp_path):
    """Walkthrough step 14: Dr A's HCC and Dr B's metastasis on the same outline both went into the dataset,
    as two examples of one lesion with contradictory labels, without a word; step 13: after the finding was
    adjudicated, "every reader" still wrote both readers' own labels."""
    from liverview.annotations.labels import LabelTaxonomy

    names = LabelTaxonomy()
    two_readers.adjudications.clear()
    first, second = two_readers.lesions[0], two_readers.lesions[3]
    assert first.label != second.label and first.label and second.label
    # By default a dataset of several readers is their consensus: the disputed finding stays out, and it is said.
    assert default_readers(two_readers, fmt="dataset").scope is ReaderScope.CONSENSUS
    assert default_readers(two_readers, fmt="seg").scope is ReaderScope.ALL_READERS
    disputed = f"L1 ({ONE}: {names.name_of(first.label)}) and L4 ({TWO}: {names.name_of(second.label)})"
    result = _export(identified_volume, two_readers, "dataset", tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "dataset" / "lesions.jsonl").read_text().splitlines()]
    assert result.n_lesions == 1 and [line["label"] for line in lines] == ["hemangioma"]
    assert result.notes == (f"Left out, as the readers label them differently and nobody decided: {disputed} "
                            "(decide them in the consensus, Ctrl+K).",)
    # Every reader's lesions, asked for explicitly, are refused, naming the finding, and nothing is written.
    every = ExportReaders(ReaderScope.ALL_READERS)
    with pytest.raises(ExportError, match=re.escape(disputed)) as refused:
        _export(identified_volume, two_readers, "dataset", tmp_path / "all", readers=every)
    assert "(decided)" not in str(refused.value)
    assert not (tmp_path / "all").exists()
    # Decided, the consensus carries the decided label; every reader's own labels would still contradict it.
    two_readers.adjudications.append(Adjudication([first.id, second.id], "metastasis", CHIEF))
    decided = _export(identified_volume, two_readers, "dataset", tmp_path / "decided")
    assert decided.n_lesions == 2 and decided.notes == ()
    with pytest.raises(ExportError, match="export the consensus") as refused:
        _export(identified_volume, two_readers, "dataset", tmp_path / "all", readers=every)
    # The refusal says the finding was decided and why that does not help here (it read as if it had not been).
    assert f"{disputed} (decided)" in str(refused.value) and "decided or not" in str(refused.value)


def test_a_pseudonymised_seg_without_its_images_says_where_it_can_be_shown(identified_volume, two_readers,
                                                                           pseudonymizer, tmp_path):
    """Walkthrough step 13: a pseudonymised SEG refers to remapped image UIDs; exported alone it opened on
    no images in other tools, and nothing said so."""
    alone = export_annotations(identified_volume, two_readers, "seg", tmp_path / "alone", pseudonymizer=pseudonymizer)
    assert any("pseudonymised UIDs" in note and "with the images" in note for note in alone.notes)
    together = export_annotations(identified_volume, two_readers, "seg", tmp_path / "together",
                                  pseudonymizer=pseudonymizer, with_images=True)
    assert not any("pseudonymised UIDs" in note for note in together.notes)
    kept = _export(identified_volume, two_readers, "seg", tmp_path / "kept")
    assert kept.notes == ()
