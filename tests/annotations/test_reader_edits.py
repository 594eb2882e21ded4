"""The store keeps each reader's opinion theirs, model answers tied to the outline they explain, and
outlines at one precision (issue #16, defects 3, 5 and 6), on the real crlm-ct-1004 series."""
from __future__ import annotations

import csv
import json

import pytest

from liverview.annotations.document import AIResult, AnnotationDocument, Lesion, Roi
from liverview.annotations.export import export_annotations
from liverview.annotations.measurements import measure_lesion
from liverview.annotations.store import AnnotationStore, NotYourLesion


def _store(document: AnnotationDocument, reader: str) -> AnnotationStore:
    return AnnotationStore(AnnotationDocument.from_dict(document.to_dict()), reader=reader)


def test_edits_of_another_readers_lesion_are_refused(identified_volume, document):
    store = _store(document, "Dr. Reader Two")
    theirs = store.document.lesions[0]
    before = json.dumps(store.document.to_dict(), sort_keys=True)
    for edit in (lambda: store.set_label(theirs.id, label="hcc"),
                 lambda: store.update_roi(theirs.id, theirs.rois[0].id, [(1, 1), (9, 1), (9, 9)]),
                 lambda: store.remove_roi(theirs.id, theirs.rois[0].id),
                 lambda: store.remove_lesion(theirs.id),
                 lambda: store.copy_roi_to_slice(theirs.id, theirs.rois[0].id, 3),
                 lambda: store.add_roi(theirs.id, Roi(3, [(1, 1), (9, 1), (9, 9)]))):
        with pytest.raises(NotYourLesion, match="Dr. Reader One"):
            edit()
    assert json.dumps(store.document.to_dict(), sort_keys=True) == before
    assert not store.can_undo()
    mine = store.add_lesion(Roi(30, [(10, 10), (20, 10), (20, 20)]))
    store.set_label(mine.id, label="hcc")
    assert store.document.lesion(mine.id).label == "hcc" and store.document.lesion(mine.id).reader == "Dr. Reader Two"


def _answer(lesion: Lesion) -> AIResult:
    return AIResult(model_id="m", probabilities={"hcc": 0.8, "metastasis": 0.2}, predicted="hcc",
                    time="2026-12-06T10:00:00+00:00", outline=lesion.outline_key())


def test_model_answer_goes_stale_when_its_outline_changes(identified_volume, document, tmp_path):
    store = _store(document, "Dr. Reader One")
    lesion = store.document.lesions[0]
    store.set_ai_result(lesion.id, _answer(lesion))
    assert store.document.lesion(lesion.id).current_ai() is not None
    store.update_roi(lesion.id, lesion.rois[0].id, [(x + 3, y) for x, y in lesion.rois[0].points_xy])
    edited = store.document.lesion(lesion.id)
    assert edited.ai is not None and edited.current_ai() is None
    with pytest.raises(ValueError, match="classify the lesion again"):
        store.accept_ai_label(lesion.id)

    out = tmp_path / "csv"
    path = export_annotations(identified_volume, store.document, "csv", out, pseudonymize=False).paths[0]
    row = next(csv.DictReader(path.open()))
    assert row["ai_predicted"] == "" and row["ai_outdated"] == "yes"
    export_annotations(identified_volume, store.document, "dataset", tmp_path / "ds", pseudonymize=False)
    lines = [json.loads(x) for x in (tmp_path / "ds" / "lesions.jsonl").read_text().splitlines()]
    assert all(line["ai"] is None for line in lines)
    # Undo brings the outline back, and with it the answer's validity.
    store.undo()
    assert store.document.lesion(lesion.id).current_ai() is not None


def test_outline_measures_the_same_after_save_and_reload(identified_volume):
    z = 25
    # The right edge lies 0.004 px beyond pixel centre 120: at the file's precision it lies on it.
    roi = Roi(z, [(95.5, 95.5), (120.004, 95.5), (120.004, 118.5), (95.5, 118.5)])
    lesion = Lesion(reader="Dr. Reader One", rois=[roi])
    reloaded = Lesion.from_dict(json.loads(json.dumps(lesion.to_dict())))
    assert measure_lesion(identified_volume, lesion) == measure_lesion(identified_volume, reloaded)
    assert lesion.outline_key() == reloaded.outline_key()
