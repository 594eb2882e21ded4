"""`Session`: the open study — its series and their contrast phases, the open volume with its
annotation store, the selected lesion, the readers shown, and the background tasks.

Qt-free. The GUI's controllers (window, annotator, Model panel, PACS dialog) receive the session,
subscribe to its typed events and change it through its methods; the command line and tests drive it
the same way without a display.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from liverview.annotations.document import Lesion
from liverview.annotations.store import AnnotationStore, ChangeEvent
from liverview.imaging.contrast_phase import ContrastPhase, PhaseDecision, reader_decision
from liverview.io.series import ScanResult, SeriesInfo
from liverview.io.volume import Volume
from liverview.session.events import SessionEvent, SessionEventKind
from liverview.session.tasks import TaskRegistry

log = logging.getLogger(__name__)

Listener = Callable[[SessionEvent], None]


@dataclass(frozen=True)
class StudyContext:
    """What the session knows of the open study for the model: the open series' contrast phase (the
    reader's correction or liverview's decision) and the study's other series of the same Frame of
    Reference with theirs, as (series, phase, how decided)."""

    phase: PhaseDecision | None
    other_series: tuple[tuple[SeriesInfo, str, str], ...] = ()


class Session:
    def __init__(self) -> None:
        self.scan: ScanResult | None = None
        self.phases: dict[str, PhaseDecision] = {}
        self.volume: Volume | None = None
        self.store: AnnotationStore | None = None
        self.selected_lesion: str | None = None
        self.selected_roi: str | None = None
        self.hidden_readers: set[str] = set()
        self._listeners: list[Listener] = []
        self.tasks = TaskRegistry(lambda: self._emit(SessionEvent(SessionEventKind.TASKS_CHANGED)))

    # -- events ----------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def _emit(self, event: SessionEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    # -- the study -------------------------------------------------------------------------------
    def set_scan(self, scan: ScanResult) -> None:
        """The series a folder holds; their phases are decided later (`set_phases`)."""
        self.scan, self.phases = scan, {}
        self._emit(SessionEvent(SessionEventKind.STUDY_SCANNED))

    def set_phases(self, phases: dict[str, PhaseDecision]) -> None:
        self.phases = dict(phases)
        self._emit(SessionEvent(SessionEventKind.PHASES_DECIDED))

    def show_volume(self, volume: Volume) -> None:
        """The volume on screen (while it loads, the same series' volume object may be replaced)."""
        self.volume = volume

    def open_series(self, volume: Volume, store: AnnotationStore) -> None:
        """`volume` with its annotations becomes the open series; the previous one is closed."""
        self.close_series()
        self.volume, self.store = volume, store
        store.subscribe(self._on_store_event)
        self._emit(SessionEvent(SessionEventKind.SERIES_OPENED))

    def close_series(self) -> None:
        """Write and release the open series' annotations."""
        if self.store is None:
            return
        store, self.store = self.store, None
        store.unsubscribe(self._on_store_event)
        store.close()
        self.selected_lesion = self.selected_roi = None
        self._emit(SessionEvent(SessionEventKind.SERIES_CLOSED))

    def _on_store_event(self, change: ChangeEvent) -> None:
        if self.selected_lesion is not None and self.selected() is None:
            self.selected_lesion = self.selected_roi = None
            self._emit(SessionEvent(SessionEventKind.SELECTION_CHANGED))
        self._emit(SessionEvent(SessionEventKind.ANNOTATIONS_CHANGED, change))

    # -- selection and readers -------------------------------------------------------------------
    def select(self, lesion_id: str | None, roi_id: str | None = None) -> None:
        self.selected_lesion, self.selected_roi = lesion_id, roi_id
        self._emit(SessionEvent(SessionEventKind.SELECTION_CHANGED))

    def selected(self) -> Lesion | None:
        if self.selected_lesion is None or self.store is None:
            return None
        try:
            return self.store.document.lesion(self.selected_lesion)
        except KeyError:
            return None

    def set_hidden_readers(self, hidden: set[str]) -> None:
        self.hidden_readers = set(hidden)
        self._emit(SessionEvent(SessionEventKind.READERS_SHOWN))

    def visible_lesions(self) -> list[Lesion]:
        return self.store.visible_lesions(self.hidden_readers) if self.store is not None else []

    # -- phases ----------------------------------------------------------------------------------
    def series_phase(self) -> PhaseDecision | None:
        """The open series' phase: the reader's correction stored with its annotations, else liverview's."""
        if self.volume is None:
            return None
        detected = self.phases.get(self.volume.info.key)
        correction = self.store.document.contrast_phase if self.store is not None else None
        if correction is None:
            return detected
        return reader_decision(ContrastPhase(correction.phase), correction.reader, detected)

    def study_context(self) -> StudyContext:
        """The open series' phase and, for every other phase of the study, one series of it (same Frame
        of Reference, axial CT) with its phase, for a model that reads several phases and for the
        training dataset. A series of the open series' own phase (a copy, another reconstruction) is
        not another phase; of several series of one phase the one with the most images is read."""
        own = self.series_phase()
        chosen: dict[str, tuple[SeriesInfo, str, str]] = {}
        if self.volume is not None and self.scan is not None:
            info = self.volume.info
            for other in self.scan.series:
                decision = self.phases.get(other.key)
                if (decision is None or not info.shares_space_with(other) or decision.phase is ContrastPhase.UNKNOWN
                        or (own is not None and decision.phase is own.phase)):
                    continue
                best = chosen.get(decision.phase.value)
                if best is None or other.n_images > best[0].n_images:
                    chosen[decision.phase.value] = (other, decision.phase.value, decision.decided_by.value)
        return StudyContext(own, tuple(chosen.values()))


__all__ = ["Session", "StudyContext"]
