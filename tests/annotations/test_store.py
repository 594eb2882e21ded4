"""The annotation store: undo/redo, events, autosave, damaged files, multiple readers."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from liverview.annotations import AIResult, AnnotationDocument, AnnotationStore, Roi
from liverview.annotations.storage import annotation_path
from liverview.annotations.store import ChangeKind, Changed

SQUARE = [(10.0, 10.0), (20.0, 10.0), (20.0, 20.0), (10.0, 20.0)]


def disk_full(path, text):
    """`write_text_atomic` on a full disk."""
    raise OSError(28, "No space left on device")


def make_store(tmp_path, reader="dr_a", delay=0.2):
    return AnnotationStore.open("1.2.3", "1.2.3.4", reader=reader, path=tmp_path / "a.json", autosave_delay=delay)


def test_files_live_in_user_data_keyed_by_uids(_private_user_data):
    path = annotation_path("1.2.840.1", "1.2.840.1.2")
    assert path == _private_user_data / "annotations" / "1.2.840.1" / "1.2.840.1.2.json"
    hostile = annotation_path("../../etc", "x/y")
    assert hostile.parent.parent == _private_user_data / "annotations" and ".." not in hostile.parts


def test_undo_redo_every_edit(tmp_path):
    store, _ = make_store(tmp_path)
    events = []
    store.subscribe(events.append)
    lesion = store.add_lesion(Roi(5, SQUARE), label="metastasis")
    store.set_label(lesion.id, confidence="certain")
    roi = store.copy_roi_to_slice(lesion.id, lesion.rois[0].id, 6)
    store.update_roi(lesion.id, roi.id, [(11, 11), (21, 11), (21, 21), (11, 21)])
    assert [e.kind for e in events] == [ChangeKind.EDIT] * 4
    # Typed: listeners learn what changed without reading the Undo text.
    assert [e.changed for e in events] == [Changed.GEOMETRY, Changed.LABEL, Changed.GEOMETRY, Changed.GEOMETRY]
    assert [e.drawn for e in events] == [True] * 4 and all(e.lesion_ids == (lesion.id,) for e in events)
    store.set_ai_result(lesion.id, AIResult("m", {"hcc": 1.0}, "hcc", "2026-12-06T10:00:00+00:00"))
    assert events[-1].changed is Changed.MODEL_RESULT and not events[-1].drawn and not events[-1].geometry_changed
    store.undo()
    assert store.document.lesion(lesion.id).slices() == [5, 6]
    for _ in range(4):
        store.undo()
    assert store.document.lesions == [] and not store.can_undo()
    for _ in range(4):
        store.redo()
    restored = store.document.lesion(lesion.id)
    assert restored.confidence == "certain" and restored.rois[1].points_xy[0] == (11.0, 11.0)
    store.undo()
    store.add_lesion(Roi(1, SQUARE))
    assert not store.can_redo()  # a new edit after undo discards the redo branch


def test_failed_edit_changes_nothing(tmp_path):
    store, _ = make_store(tmp_path)
    lesion = store.add_lesion(Roi(5, SQUARE))
    with pytest.raises(ValueError):
        store.update_roi(lesion.id, lesion.rois[0].id, [(0, 0), (1, 1)])
    with pytest.raises(KeyError):
        store.set_label("nope", label="hcc")
    assert store.document.lesion(lesion.id).rois[0].points_xy == SQUARE
    assert store.undo_text() == "Add lesion"


def test_autosave_within_delay_and_reopen(tmp_path):
    store, report = make_store(tmp_path)
    assert not report.existed
    store.add_lesion(Roi(3, SQUARE), label="hcc")
    time.sleep(0.6)
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["format"] == "liverview.annotations" and saved["version"] == 1
    assert saved["lesions"][0]["label"] == "hcc" and saved["lesions"][0]["reader"] == "dr_a"
    store.close()
    again, report = make_store(tmp_path, reader="dr_b")
    assert report.existed and not report.recovered_after_crash
    assert again.document.lesions[0].label == "hcc"


def test_damaged_file_is_kept_and_explained(tmp_path):
    (tmp_path / "a.json").write_text('{"format": "liverview.annotations", "version": 1, "lesions": [')
    store, report = make_store(tmp_path)
    assert report.damaged_copy is not None and report.damaged_copy.exists()
    assert "could not be read" in report.problem and report.damaged_copy.name in report.problem
    assert str(tmp_path) in report.problem  # where to find the copy, not only its 70-character name
    assert report.damaged_copy.read_text().endswith('"lesions": [')
    assert store.document.lesions == []


def test_a_file_nested_too_deeply_for_the_parser_is_kept_and_explained(tmp_path):
    (tmp_path / "a.json").write_text("[" * 100000 + "]" * 100000)
    store, report = make_store(tmp_path)
    assert report.damaged_copy is not None and "could not be read" in report.problem
    assert store.document.lesions == []


def test_crash_lock_is_reported_as_recovery(tmp_path):
    store, _ = make_store(tmp_path)
    store.add_lesion(Roi(3, SQUARE))
    store.flush()
    (tmp_path / "a.lock").write_text("999999999")  # a pid that does not exist: the session died
    _, report = make_store(tmp_path)
    assert report.recovered_after_crash


def test_ai_acceptance_and_adjudication_are_recorded(tmp_path):
    store, _ = make_store(tmp_path, reader="dr_a")
    lesion = store.add_lesion(Roi(3, SQUARE), label="benign_cyst")
    store.set_ai_result(lesion.id, AIResult("model-1", {"hcc": 0.9, "benign_cyst": 0.1}, "hcc", "2026-11-28T09:00:00Z"))
    store.accept_ai_label(lesion.id)
    accepted = store.document.lesion(lesion.id)
    assert accepted.label == "hcc" and accepted.label_source == "ai-accepted" and accepted.ai.accepted_by == "dr_a"
    other = AnnotationDocument("1.2.3", "1.2.3.4")
    store_b = AnnotationStore(other, reader="dr_b")
    second = store_b.add_lesion(Roi(3, SQUARE), label="metastasis")
    assert store.merge(store_b.document).added == 1 and store.document.readers() == ["dr_a", "dr_b"]
    decision = store.adjudicate([lesion.id, second.id], "metastasis", note="biopsy")
    assert decision.decided_by == "dr_a" and store.document.adjudications == [decision]
    round_trip = AnnotationDocument.from_dict(json.loads(json.dumps(store.document.to_dict())))
    assert round_trip.to_dict() == store.document.to_dict()


def test_undo_names_the_change_it_takes_back(tmp_path):
    """A confidence change was offered as "Undo Set label": a reader would think Ctrl+Z undoes the diagnosis."""
    store, _ = make_store(tmp_path)
    lesion = store.add_lesion(Roi(5, SQUARE), label="hcc")
    store.set_label(lesion.id, confidence="possible")
    assert store.undo_text() == "Set confidence"
    store.set_label(lesion.id, note="rim")
    assert store.undo_text() == "Edit note"
    store.set_label(lesion.id, label="metastasis", confidence="probable")
    assert store.undo_text() == "Set label"
    store.undo()
    assert store.document.lesion(lesion.id).label == "hcc"


def test_a_failed_save_keeps_the_changes_and_says_so_until_a_save_succeeds(tmp_path, monkeypatch):
    """A full disk: the autosave failed, then closing wrote nothing and said nothing, and every change
    since the last save was gone."""
    import liverview.annotations.store as store_module

    store, _ = make_store(tmp_path)
    store.add_lesion(Roi(3, SQUARE), label="hcc")
    store.flush()
    written = store_module.write_text_atomic

    monkeypatch.setattr(store_module, "write_text_atomic", disk_full)
    store.add_lesion(Roi(4, SQUARE), label="metastasis")
    store.flush()
    assert store.save_error.endswith("No space left on device")
    store.flush()  # tried again, still failing: still said
    assert "No space left" in store.save_error
    copy = tmp_path / "elsewhere" / "copy.json"
    copy.parent.mkdir()
    monkeypatch.setattr(store_module, "write_text_atomic", written)
    store.save_copy(copy)
    assert [lesion["label"] for lesion in json.loads(copy.read_text())["lesions"]] == ["hcc", "metastasis"]
    store.flush()  # space again: the kept changes are written
    assert store.save_error == ""
    assert len(json.loads((tmp_path / "a.json").read_text())["lesions"]) == 2


def test_a_flush_during_a_failing_write_waits_for_it_and_reports_it(tmp_path, monkeypatch):
    """Closing while the autosave thread was writing saw nothing unsaved (the snapshot was in flight), so
    the window closed and the write then failed on the full disk: the change was lost without a word."""
    import threading

    import liverview.annotations.store as store_module

    writing, release = threading.Event(), threading.Event()

    def slow_full_disk(path, text):
        writing.set()
        release.wait(5)
        raise OSError(28, "No space left on device")

    store, _ = make_store(tmp_path, delay=0.01)
    monkeypatch.setattr(store_module, "write_text_atomic", slow_full_disk)
    store.add_lesion(Roi(3, SQUARE), label="hcc")
    assert writing.wait(5)  # the timer thread is inside the write
    assert store._autosaver.unsaved
    threading.Timer(0.2, release.set).start()
    store.flush()  # waits for that write, then tries again itself
    assert "No space left" in store.save_error


def test_a_failed_save_is_tried_again_without_another_edit(tmp_path, monkeypatch):
    import liverview.annotations.store as store_module

    store, _ = make_store(tmp_path, delay=0.01)
    written = store_module.write_text_atomic

    monkeypatch.setattr(store_module, "write_text_atomic", disk_full)
    store.add_lesion(Roi(3, SQUARE), label="hcc")
    store.flush()
    assert store.save_error
    monkeypatch.setattr(store_module, "write_text_atomic", written)  # space again
    store.retry_save()
    deadline = time.monotonic() + 5
    while store.save_error and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.save_error == "" and json.loads((tmp_path / "a.json").read_text())["lesions"]


def test_a_series_opens_when_its_annotations_folder_cannot_be_written(tmp_path):
    """A full disk: writing the session lock raised, and the app showed neither the series nor a reason."""
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    store, report = AnnotationStore.open("1.2.3", "1.2.3.4", path=blocked / "a.json", autosave_delay=0.01)
    assert "cannot be written" in report.problem and str(blocked) in report.problem
    store.add_lesion(Roi(3, SQUARE), label="hcc")
    store.flush()
    assert store.save_error  # and every save says so



def test_changes_given_up_are_not_asked_about_again(tmp_path, monkeypatch):
    import liverview.annotations.store as store_module

    store, _ = make_store(tmp_path)
    monkeypatch.setattr(store_module, "write_text_atomic", disk_full)
    store.add_lesion(Roi(3, SQUARE), label="hcc")
    store.flush()
    assert store.save_error
    store.give_up_unsaved()
    store.flush()
    assert store.save_error == ""  # nothing left to write: the close or the next series opens unasked
    store.add_lesion(Roi(4, SQUARE), label="hcc")
    store.flush()
    assert store.save_error  # a new change on the full disk is said again


def _colleague_file(reader: str) -> tuple[AnnotationStore, object]:
    store = AnnotationStore(AnnotationDocument("1.2.3", "1.2.3.4"), reader=reader)
    return store, store.add_lesion(Roi(3, SQUARE), label="hemangioma")


def test_importing_a_colleagues_file_brings_its_adjudications(tmp_path):
    """Walkthrough review: a file with a senior reader's adjudication came in without it, so the consensus
    export called the lesion "readers disagree"."""
    ada, _ = make_store(tmp_path, reader="dr_ada")
    mine = ada.add_lesion(Roi(3, SQUARE), label="hcc")
    bo, theirs = _colleague_file("dr_bo")
    bo.merge(ada.document)
    senior = AnnotationStore(bo.document, reader="dr_senior")
    decision = senior.adjudicate([mine.id, theirs.id], "hcc", note="biopsy")
    result = ada.merge(senior.document)
    assert (result.added, result.adjudications) == (1, 1)
    assert [a.to_dict() for a in ada.document.adjudications] == [decision.to_dict()]
    assert not ada.merge(senior.document).anything  # the same file again changes nothing
    # A later decision in a file does not replace this reader's own (regression review).
    ada.adjudicate([mine.id, theirs.id], "metastasis")
    time.sleep(1.1)
    senior.adjudicate([mine.id, theirs.id], "benign_cyst")
    assert ada.merge(senior.document).adjudications == 0
    assert [(a.final_label, a.decided_by) for a in ada.document.adjudications] == [("metastasis", "dr_ada")]
    ada.undo()
    ada.undo()
    assert ada.document.adjudications == [] and len(ada.document.lesions) == 1


def test_reimporting_a_colleagues_changed_file_updates_their_lesions_only(tmp_path):
    """Walkthrough review: Bo relabelled his lesion and sent his file again; the import said "Imported 0"
    and kept his old label, so the consensus showed a disagreement he no longer held."""
    ada, _ = make_store(tmp_path, reader="dr_ada")
    mine = ada.add_lesion(Roi(3, SQUARE), label="hcc")
    bo, theirs = _colleague_file("dr_bo")
    assert ada.merge(bo.document).added == 1
    time.sleep(1.1)  # modification times have a resolution of seconds
    bo.set_label(theirs.id, label="benign_cyst")
    bo.merge(ada.document)
    bo.document.lesions = [lesion if lesion.id != mine.id else _relabelled(lesion) for lesion in bo.document.lesions]
    result = ada.merge(bo.document)
    assert (result.added, result.updated) == (0, 1)
    assert ada.document.lesion(theirs.id).label == "benign_cyst"
    assert ada.document.lesion(mine.id).label == "hcc"  # a file never replaces this reader's own lesion


def _relabelled(lesion):
    changed = lesion.snapshot()
    changed.label, changed.modified = "metastasis", "2999-01-01T00:00:00+00:00"
    return changed


def test_a_series_open_in_another_live_session_is_reported_and_its_lock_kept(tmp_path):
    """Walkthrough review: two windows on one series saved over each other without a word, and the second
    took over the first one's lock (and deleted it on close), so the first one's crash went unnoticed."""
    import subprocess
    import sys

    other = subprocess.Popen([sys.executable, "-c", "print('ready', flush=True); import time; time.sleep(60)"],
                             stdout=subprocess.PIPE)
    try:
        assert other.stdout.readline().strip() == b"ready"  # started: past its exec
        (tmp_path / "a.lock").write_text(str(other.pid))
        store, report = make_store(tmp_path)
        assert report.open_elsewhere_pid == other.pid and not report.recovered_after_crash
        store.add_lesion(Roi(3, SQUARE))
        store.close()
        assert (tmp_path / "a.lock").read_text() == str(other.pid)
        # The other way round (regression review): this session opens again, then the other one closes
        # first; this one is still in the lock, so a third window is warned and this one's crash noticed.
        again, _ = make_store(tmp_path)
        assert (tmp_path / "a.lock").read_text().split() == [str(other.pid), str(os.getpid())]
        (tmp_path / "a.lock").write_text(str(os.getpid()))  # what the other session's close leaves
        _, report = make_store(tmp_path)
        assert not report.recovered_after_crash  # this process's own open session is no crash
        again.close()
        assert not (tmp_path / "a.lock").exists()
    finally:
        other.kill()
        other.wait()
    _, report = make_store(tmp_path)
    assert report.open_elsewhere_pid is None and not report.recovered_after_crash
    (tmp_path / "a.lock").write_text(f"{other.pid}\n")
    _, report = make_store(tmp_path)
    assert report.open_elsewhere_pid is None and report.recovered_after_crash


def test_a_lock_whose_pid_now_runs_something_else_is_a_crash(tmp_path):
    """Walkthrough review: after a reboot a stale lock's PID can belong to an unrelated process; the crash
    was then not reported (and the series would be said to be open in another window)."""
    import subprocess

    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        command = Path(f"/proc/{unrelated.pid}/cmdline")
        deadline = time.monotonic() + 10
        while not command.read_bytes().startswith(b"sleep") and time.monotonic() < deadline:
            time.sleep(0.01)  # past its exec: until then it still shows this Python's command line
        store, _ = make_store(tmp_path)
        store.add_lesion(Roi(3, SQUARE))
        store.flush()
        (tmp_path / "a.lock").write_text(str(unrelated.pid))
        _, report = make_store(tmp_path)
        assert report.recovered_after_crash and report.open_elsewhere_pid is None
    finally:
        unrelated.kill()
        unrelated.wait()
