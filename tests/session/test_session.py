"""The Qt-free session under the GUI: typed events, selection, readers, phases and the task registry,
driven without a display on the real crlm-ct-1004 series."""
from __future__ import annotations

import pytest

from liverview.annotations.document import Lesion, Roi
from liverview.annotations.store import AnnotationStore, Changed
from liverview.io import load_series, scan_paths
from liverview.session import Session, SessionEventKind, TaskRegistry

SQUARE = [(200.0, 200.0), (230.0, 200.0), (230.0, 230.0), (200.0, 230.0)]


@pytest.fixture(scope="module")
def volume(crlm_dir):
    return load_series(crlm_dir)


def _open(session: Session, volume, reader: str = "Dr Ada") -> AnnotationStore:
    store, _ = AnnotationStore.open(volume.study_uid, volume.series_uid, volume.frame_of_reference_uid, reader=reader)
    session.open_series(volume, store)
    return store


def test_events_are_typed_and_follow_the_study(volume, crlm_dir):
    session, events = Session(), []
    session.subscribe(events.append)
    session.set_scan(scan_paths([crlm_dir]))
    store = _open(session, volume)
    lesion = store.add_lesion(Roi(20, SQUARE), label="metastasis")
    store.set_label(lesion.id, confidence="certain")
    session.select(lesion.id)
    assert [e.kind for e in events] == [SessionEventKind.STUDY_SCANNED, SessionEventKind.SERIES_OPENED,
                                        SessionEventKind.ANNOTATIONS_CHANGED, SessionEventKind.ANNOTATIONS_CHANGED,
                                        SessionEventKind.SELECTION_CHANGED]
    assert events[2].geometry_changed and events[3].change.changed is Changed.LABEL and not events[3].geometry_changed
    assert session.selected() is not None and session.selected().id == lesion.id

    events.clear()
    store.remove_lesion(lesion.id)  # the selected lesion goes: the selection goes with it
    assert [e.kind for e in events] == [SessionEventKind.SELECTION_CHANGED, SessionEventKind.ANNOTATIONS_CHANGED]
    assert session.selected() is None and session.selected_lesion is None


def test_readers_shown_and_closing_releases_the_annotations(volume):
    session = Session()
    store = _open(session, volume)
    mine = store.add_lesion(Roi(20, SQUARE))
    store.document.lesions.append(Lesion(reader="Dr Bob", rois=[Roi(21, SQUARE)]))
    session.set_hidden_readers({"Dr Bob"})
    assert [lesion.id for lesion in session.visible_lesions()] == [mine.id]
    lock = store.path.with_suffix(".lock")
    assert lock.exists()
    session.close_series()
    assert session.store is None and not lock.exists() and store.path.exists()


def test_study_context_names_the_other_phases_of_the_study(volume, crlm_dir):
    from liverview.imaging.contrast_phase import detect_series_phases

    session = Session()
    scan = scan_paths([crlm_dir])
    session.set_scan(scan)
    session.set_phases(detect_series_phases(scan.series))
    _open(session, volume)
    assert session.series_phase().phase.value == "portal_venous"
    assert session.study_context().other_series == ()  # one series: nothing else to read


class _Job:
    def __init__(self, name: str) -> None:
        self.name, self.running, self.cancelled = name, True, False

    def cancel(self) -> None:
        self.cancelled, self.running = True, False

    def is_running(self) -> bool:
        return self.running

    def wait(self, msecs: int = 0) -> bool:
        return not self.running


def test_one_registry_sees_every_task():
    changes = []
    registry = TaskRegistry(lambda: changes.append(len(registry.running())))
    load, export = registry.add(_Job("load")), registry.add(_Job("export"))
    assert registry.cancel_all(keep=lambda task: task.name == "export") == [load]
    assert load.cancelled and not export.cancelled
    assert registry.cancel_all() == [export] and registry.wait_all()
    registry.discard(load)
    assert changes == [1, 2, 0]


def test_study_context_gives_one_series_per_other_phase_never_the_open_series_own(volume, crlm_dir, tmp_path):
    """A CD with the portal-venous series three times (original, JPEG-LS and RLE copies) exported a training
    dataset whose "other phase" was a copy of the same portal-venous series; with several series of one
    other phase, the last one silently won. Now: no series of the open series' phase, one per other phase
    (the one with the most images)."""
    import pydicom
    from pydicom.uid import generate_uid

    from liverview.imaging.contrast_phase import ContrastPhase, DecidedBy, PhaseDecision

    sources = sorted(crlm_dir.glob("*.dcm"))
    copies = {"venous copy": sources, "arterial": sources, "arterial, fewer slices": sources[5:30]}
    for name, files in copies.items():
        folder = tmp_path / name
        folder.mkdir()
        series_uid = generate_uid()
        for source in files:
            ds = pydicom.dcmread(source)
            ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.SeriesDescription = name
            ds.save_as(folder / source.name)
    scan = scan_paths([crlm_dir, tmp_path])
    said = {"venous copy": ContrastPhase.PORTAL_VENOUS, "arterial": ContrastPhase.ARTERIAL,
            "arterial, fewer slices": ContrastPhase.ARTERIAL}
    session = Session()
    session.set_scan(scan)
    session.set_phases({info.key: PhaseDecision(said.get(info.identity.series_description, ContrastPhase.PORTAL_VENOUS),
                                                DecidedBy.DESCRIPTION, "test") for info in scan.series})
    _open(session, volume)
    others = session.study_context().other_series
    assert [(info.identity.series_description, phase) for info, phase, _ in others] == [("arterial", "arterial")]
    assert others[0][0].n_images == len(sources)
