"""`AnnotationStore`: the one place annotations change. Every edit is undoable, announced to listeners
as a plain-Python event (the GUI subscribes, napari-style) and autosaved within a second or two.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Set as AbstractSet
from contextlib import contextmanager
import enum
from dataclasses import dataclass, replace
from pathlib import Path

from liverview.processes import liverview_alive
from liverview.annotations.document import (AIResult, Adjudication, AnnotationDocument, AnnotationFormatError,
                                            Lesion, PhaseCorrection, Roi)
from liverview.atomic_write import write_text_atomic
from liverview.annotations.storage import annotation_path, keep_damaged_copy, now_iso

log = logging.getLogger(__name__)

#: A change is on disk at most this long after it was made (plus the time of one write).
AUTOSAVE_DELAY_S = 1.0

Listener = Callable[["ChangeEvent"], None]


class NotYourLesion(PermissionError):
    """An edit of another reader's lesion: each reader's lesions stay their own opinion."""


class ChangeKind(enum.Enum):
    """How the document changed: one edit, an undo or redo of one, or a reload from disk."""

    EDIT = "edit"
    UNDO = "undo"
    REDO = "redo"


class Changed(enum.Flag):
    """What an edit changed, so listeners react to the part they show (no matching of undo texts)."""

    GEOMETRY = enum.auto()      # outlines added, edited, moved or removed (lesions included)
    LABEL = enum.auto()         # label, confidence or note; an accepted model label
    MODEL_RESULT = enum.auto()  # a model answer stored with a lesion
    ADJUDICATION = enum.auto()
    PHASE = enum.auto()         # the reader's contrast phase of the series
    EVERYTHING = GEOMETRY | LABEL | MODEL_RESULT | ADJUDICATION | PHASE


@dataclass(frozen=True)
class ChangeEvent:
    """One change of the document: `kind`, what it `changed`, the lesions it touched (empty: any), and
    a `description` for humans (the Undo menu's text)."""

    kind: ChangeKind
    changed: Changed
    description: str
    lesion_ids: tuple[str, ...] = ()

    @property
    def drawn(self) -> bool:
        """False when nothing drawn on the image changed (a model result, the phase): overlays skip redrawing."""
        return bool(self.changed & (Changed.GEOMETRY | Changed.LABEL))

    @property
    def geometry_changed(self) -> bool:
        return bool(self.changed & Changed.GEOMETRY)


@dataclass(frozen=True)
class OpenReport:
    """How opening went: recovered after a crash, started fresh because the file was damaged, ..."""

    path: Path
    existed: bool
    recovered_after_crash: bool = False
    damaged_copy: Path | None = None
    problem: str = ""
    #: The process of another liverview session that has the series open (its lock is alive): whichever
    #: of the two saves last overwrites the other's changes.
    open_elsewhere_pid: int | None = None


class Autosaver:
    """Writes the latest snapshot at most `delay` seconds after the first unsaved change, on its own
    thread, atomically. `flush()` writes synchronously (on close).

    The snapshot is handed over as plain data (`AnnotationDocument.to_dict()` builds fresh lists and
    dicts) and encoded to JSON on the timer thread: for a study with many long outlines that takes
    tens of milliseconds the GUI thread must not spend on every edit."""

    def __init__(self, path: Path, delay: float = AUTOSAVE_DELAY_S) -> None:
        self.path = path
        self.delay = delay
        self._lock = threading.Lock()
        #: One write at a time: `flush()` waits for the timer thread's write in flight and learns how it went.
        self._write_lock = threading.Lock()
        self._pending: dict | None = None
        self._writing = False
        self._timer: threading.Timer | None = None
        self.saves = 0
        self.last_error: str = ""
        #: The failed write's reason alone ("No space left on device"), for messages that name the file elsewhere.
        self.last_reason: str = ""

    def schedule(self, snapshot: dict) -> None:
        with self._lock:
            self._pending = snapshot
            self._start_timer()

    def _start_timer(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.delay, self._write_pending)
            self._timer.daemon = True
            self._timer.start()

    def give_up(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._pending, self.last_error, self.last_reason = None, "", ""

    def retry(self) -> None:
        """After a failed write, try again in the background (the disk may have room now)."""
        with self._lock:
            if self._pending is not None and self.last_error:
                self._start_timer()

    def _write_pending(self) -> None:
        with self._write_lock:
            with self._lock:
                snapshot, self._pending, self._timer = self._pending, None, None
                self._writing = snapshot is not None
            if snapshot is None:
                return
            try:
                write_text_atomic(self.path, _encode(snapshot))
                self.saves += 1
                self.last_error = self.last_reason = ""
            except OSError as exc:
                # Kept for the next try (the next edit, a retry, or `flush()` on close), which reports again: a
                # full disk must not turn the close into a silent loss of everything since the last save.
                with self._lock:
                    if self._pending is None:
                        self._pending = snapshot
                self.last_reason = str(exc.strerror or exc)
                self.last_error = f"cannot save annotations to {self.path}: {self.last_reason}"
                log.error(self.last_error)
            finally:
                with self._lock:
                    self._writing = False

    @property
    def unsaved(self) -> bool:
        """Changes wait to be written (scheduled, being written, or kept after a failed write)."""
        with self._lock:
            return self._pending is not None or self._writing

    def flush(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self._write_pending()


class AnnotationStore:
    """Holds one series' `AnnotationDocument`; edits go through `edit()` so they can be undone."""

    def __init__(self, document: AnnotationDocument, path: Path | None = None, reader: str = "reader",
                 autosave_delay: float = AUTOSAVE_DELAY_S) -> None:
        self.document = document
        self.path = path
        self.reader = reader
        self._undo: list[tuple[str, dict]] = []
        self._redo: list[tuple[str, dict]] = []
        self._listeners: list[Listener] = []
        self._autosaver = Autosaver(path, autosave_delay) if path is not None else None

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, study_uid: str, series_uid: str, frame_of_reference_uid: str = "", reader: str = "reader",
             path: Path | None = None, autosave_delay: float = AUTOSAVE_DELAY_S) -> tuple[AnnotationStore, OpenReport]:
        """Open (or start) the annotation file of a series. A damaged file is kept as a copy and the
        report explains what happened; a lock left by a crashed session is reported as a recovery."""
        path = path or annotation_path(study_uid, series_uid)
        lock = path.with_suffix(".lock")
        pids = _lock_pids(lock)
        others = _other_sessions(pids)
        crashed = lock.exists() and not others and os.getpid() not in pids
        report = OpenReport(path=path, existed=path.exists(), recovered_after_crash=crashed and path.exists(),
                            open_elsewhere_pid=others[0] if others else None)
        document = AnnotationDocument(study_uid, series_uid, frame_of_reference_uid)
        if path.exists():
            try:
                document = AnnotationDocument.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, AnnotationFormatError) as exc:
                copy_path = keep_damaged_copy(path)
                problem = (f"{path.name} could not be read ({exc}); a copy was kept as {copy_path.name} in "
                           f"{path.parent} and a new file started")
                log.error(problem)
                report = OpenReport(path=path, existed=True, damaged_copy=copy_path, problem=problem)
                document = AnnotationDocument(study_uid, series_uid, frame_of_reference_uid)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for stale in path.parent.glob(f".{path.name}.*.tmp"):
                stale.unlink(missing_ok=True)  # half-written temp of a killed session; the real file is intact
            # Every live session of the series is in it: each one's crash is noticed, whichever closes first.
            lock.write_text("\n".join(str(pid) for pid in [*others, os.getpid()]))
        except OSError as exc:
            # A full disk: the series still opens; every save will fail and say so until there is room.
            problem = (f"the annotations folder {path.parent} cannot be written ({exc.strerror or exc}): outlines "
                       "drawn now cannot be saved until there is room there")
            log.error(problem)
            report = replace(report, problem=problem)
        return cls(document, path, reader, autosave_delay), report

    def close(self) -> None:
        """Write everything now and release the session lock. Whatever could not be written is lost
        then: callers that can ask the user first check `flush()` and `save_error`."""
        self.flush()
        if self.path is not None:
            lock = self.path.with_suffix(".lock")
            others = _other_sessions(_lock_pids(lock))
            try:
                if others:
                    lock.write_text("\n".join(map(str, others)))
                else:
                    lock.unlink(missing_ok=True)
            except OSError:  # its folder could not be written when the series opened: there is no lock
                pass

    def flush(self) -> None:
        if self._autosaver is not None:
            self._autosaver.flush()

    def save_again(self) -> None:
        """Write the document as it is now (soon, in the background), whatever was given up before."""
        if self._autosaver is not None:
            self._autosaver.schedule(self.document.to_dict())

    def give_up_unsaved(self) -> None:
        """The user gave up what could not be saved (or saved a copy elsewhere): stop trying and saying so.
        The next edit is saved, or fails and is said, as any."""
        if self._autosaver is not None:
            self._autosaver.give_up()

    def retry_save(self) -> None:
        """Try a failed save again in the background."""
        if self._autosaver is not None:
            self._autosaver.retry()

    @property
    def save_error(self) -> str:
        """Why the last write failed while changes are still unsaved; "" otherwise."""
        if self._autosaver is None or not self._autosaver.unsaved:
            return ""
        return self._autosaver.last_error

    @property
    def save_error_reason(self) -> str:
        """`save_error`'s reason alone ("No space left on device"); "" when there is no error."""
        return self._autosaver.last_reason if self.save_error and self._autosaver is not None else ""

    def save_copy(self, path: Path) -> None:
        """Write the annotations to `path` as well (somewhere else when their own folder cannot be
        written); raises OSError."""
        write_text_atomic(Path(path), _encode(self.document.to_dict()))

    # -- events ----------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def _announce(self, event: ChangeEvent) -> None:
        if self._autosaver is not None:
            self.document.modified = now_iso()
            self._autosaver.schedule(self.document.to_dict())
        for listener in list(self._listeners):
            listener(event)

    # -- undo ------------------------------------------------------------------------------------
    @contextmanager
    def edit(self, description: str, *lesion_ids: str, changed: Changed = Changed.GEOMETRY) -> Iterator[AnnotationDocument]:
        """Everything done to the document inside the block is one undoable step, announced as `changed`."""
        before = self.document.to_dict()
        try:
            yield self.document
        except BaseException:
            self.document = AnnotationDocument.from_dict(before)
            raise
        self._undo.append((description, before))
        self._redo.clear()
        self._announce(ChangeEvent(ChangeKind.EDIT, changed, description, tuple(lesion_ids)))

    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo_text(self) -> str:
        return self._undo[-1][0] if self._undo else ""

    def redo_text(self) -> str:
        return self._redo[-1][0] if self._redo else ""

    def undo(self) -> None:
        if not self._undo:
            return
        description, before = self._undo.pop()
        self._redo.append((description, self.document.to_dict()))
        self.document = AnnotationDocument.from_dict(before)
        self._announce(ChangeEvent(ChangeKind.UNDO, Changed.EVERYTHING, description))

    def redo(self) -> None:
        if not self._redo:
            return
        description, after = self._redo.pop()
        self._undo.append((description, self.document.to_dict()))
        self.document = AnnotationDocument.from_dict(after)
        self._announce(ChangeEvent(ChangeKind.REDO, Changed.EVERYTHING, description))

    # -- edits -----------------------------------------------------------------------------------
    def own_lesion(self, lesion_id: str) -> Lesion:
        """The lesion, if it is this store's reader's; another reader's raises `NotYourLesion`."""
        lesion = self.document.lesion(lesion_id)
        if lesion.reader != self.reader:
            raise NotYourLesion(f"lesion {lesion.id} is {lesion.reader}'s and stays their opinion; you read as "
                                f"{self.reader}: outline it yourself, or decide its label in the consensus (Ctrl+K)")
        return lesion

    def visible_lesions(self, hidden_readers: AbstractSet[str] = frozenset()) -> list[Lesion]:
        return [lesion for lesion in self.document.lesions if lesion.reader not in hidden_readers]

    def add_lesion(self, roi: Roi, label: str | None = None, confidence: str = "probable") -> Lesion:
        lesion = Lesion(reader=self.reader, label=label, confidence=confidence, rois=[roi])
        with self.edit("Add lesion", lesion.id) as doc:
            doc.lesions.append(lesion)
        return self.document.lesion(lesion.id)

    def add_roi(self, lesion_id: str, roi: Roi) -> Roi:
        self.own_lesion(lesion_id)
        with self.edit("Add outline", lesion_id) as doc:
            lesion = doc.lesion(lesion_id)
            lesion.rois.append(roi)
            lesion.modified = now_iso()
        return roi

    def update_roi(self, lesion_id: str, roi_id: str, points_xy: list[tuple[float, float]], kind: str | None = None) -> None:
        if len(points_xy) < 3:
            raise ValueError("an outline needs at least 3 points")
        self.own_lesion(lesion_id)
        with self.edit("Edit outline", lesion_id) as doc:
            lesion = doc.lesion(lesion_id)
            roi = lesion.roi(roi_id)
            roi.points_xy = [(float(x), float(y)) for x, y in points_xy]
            if kind is not None:
                roi.kind = kind
            lesion.modified = now_iso()

    def remove_roi(self, lesion_id: str, roi_id: str) -> None:
        """Remove one outline; a lesion left without outlines is removed too."""
        self.own_lesion(lesion_id)
        with self.edit("Delete outline", lesion_id) as doc:
            lesion = doc.lesion(lesion_id)
            lesion.rois = [roi for roi in lesion.rois if roi.id != roi_id]
            if not lesion.rois:
                doc.lesions.remove(lesion)

    def remove_lesion(self, lesion_id: str) -> None:
        self.own_lesion(lesion_id)
        with self.edit("Delete lesion", lesion_id, changed=Changed.GEOMETRY | Changed.ADJUDICATION) as doc:
            doc.lesions.remove(doc.lesion(lesion_id))
            for adjudication in doc.adjudications:
                if lesion_id in adjudication.lesion_ids:
                    adjudication.lesion_ids.remove(lesion_id)
            doc.adjudications = [a for a in doc.adjudications if a.lesion_ids]

    def set_label(self, lesion_id: str, label: str | None = None, confidence: str | None = None,
                  note: str | None = None) -> None:
        current = self.own_lesion(lesion_id)
        # Undo names what it takes back: "Undo Set label" after a confidence change read as the diagnosis.
        what = ("Set label" if label is not None and label != current.label else
                "Set confidence" if confidence is not None and confidence != current.confidence else
                "Edit note" if note is not None else "Set label")
        with self.edit(what, lesion_id, changed=Changed.LABEL) as doc:
            lesion = doc.lesion(lesion_id)
            if label is not None and label != lesion.label:
                lesion.label = label
                lesion.label_source = "reader"
            if confidence is not None:
                lesion.confidence = confidence
            if note is not None:
                lesion.note = note
            lesion.modified = now_iso()

    def copy_roi_to_slice(self, lesion_id: str, roi_id: str, slice_index: int, sop_instance_uid: str = "") -> Roi:
        """Propagate an outline to a neighbouring slice (to be adjusted there)."""
        source = self.own_lesion(lesion_id).roi(roi_id)
        roi = Roi(slice_index=slice_index, points_xy=list(source.points_xy), kind="propagated",
                  sop_instance_uid=sop_instance_uid)
        with self.edit("Copy outline to slice", lesion_id) as doc:
            doc.lesion(lesion_id).rois.append(roi)
        return roi

    def set_ai_result(self, lesion_id: str, result: AIResult) -> None:
        with self.edit("Store model result", lesion_id, changed=Changed.MODEL_RESULT) as doc:
            doc.lesion(lesion_id).ai = result

    def accept_ai_label(self, lesion_id: str) -> None:
        """The reader takes the model's top class; the lesion records who accepted the suggestion."""
        self.own_lesion(lesion_id)
        with self.edit("Accept model label", lesion_id, changed=Changed.LABEL) as doc:
            lesion = doc.lesion(lesion_id)
            if lesion.ai is None:
                raise ValueError("this lesion has no model result to accept")
            if lesion.current_ai() is None:
                raise ValueError("the outline changed after the model answered; classify the lesion again")
            refusal = lesion.ai.refusal()
            if refusal is not None:
                raise ValueError(refusal)
            lesion.label = lesion.ai.predicted
            lesion.label_source = "ai-accepted"
            lesion.ai.accepted_by = self.reader
            lesion.modified = now_iso()

    def adjudicate(self, lesion_ids: list[str], final_label: str, note: str = "") -> Adjudication:
        """Record the final label of a group of matched lesions (replacing an earlier decision)."""
        decision = Adjudication(lesion_ids=list(lesion_ids), final_label=final_label, decided_by=self.reader, note=note)
        with self.edit("Adjudicate", *lesion_ids, changed=Changed.ADJUDICATION) as doc:
            doc.adjudications = [a for a in doc.adjudications if not set(a.lesion_ids) & set(lesion_ids)]
            doc.adjudications.append(decision)
        return decision

    def set_contrast_phase(self, phase: str | None, detected: str = "unknown") -> None:
        """The reader's contrast phase for the series (None: back to liverview's own decision); undoable."""
        with self.edit("Set contrast phase" if phase else "Reset contrast phase", changed=Changed.PHASE) as doc:
            doc.contrast_phase = None if phase is None else PhaseCorrection(phase, self.reader, detected)

    def merge(self, other: AnnotationDocument) -> MergeResult:
        """Bring in another document's work (e.g. a colleague's file, again after they changed it): lesions
        not here yet; the newer version of another reader's lesion (this reader's own are never replaced
        by a file); and the adjudications of lesions that are all here, the later decision winning where
        two decide the same lesions unless the earlier one is this reader's. One undoable step."""
        mine = {lesion.id: lesion for lesion in self.document.lesions}
        new = [copy.deepcopy(lesion) for lesion in other.lesions if lesion.id not in mine]
        newer = {lesion.id: copy.deepcopy(lesion) for lesion in other.lesions
                 if lesion.id in mine and lesion.reader != self.reader and lesion.reader == mine[lesion.id].reader
                 and lesion.modified > mine[lesion.id].modified and lesion.to_dict() != mine[lesion.id].to_dict()}
        present = set(mine) | {lesion.id for lesion in new}
        decisions = []
        for decision in other.adjudications:
            if not set(decision.lesion_ids) <= present or decision.to_dict() in [a.to_dict() for a in self.document.adjudications]:
                continue
            overlapping = [a for a in self.document.adjudications if set(a.lesion_ids) & set(decision.lesion_ids)]
            # As with lesions, a file never replaces this reader's own decision.
            if all(decision.time > a.time and a.decided_by != self.reader for a in overlapping):
                decisions.append(copy.deepcopy(decision))
        touched = [lesion.id for lesion in new] + list(newer)
        if not touched and not decisions:
            return MergeResult(0, 0, 0)  # nothing new: no empty step to undo
        with self.edit(f"Import {len(new)} lesion(s)", *touched, changed=Changed.EVERYTHING) as doc:
            doc.lesions = [newer.get(lesion.id, lesion) for lesion in doc.lesions] + new
            for decision in decisions:
                doc.adjudications = [a for a in doc.adjudications if not set(a.lesion_ids) & set(decision.lesion_ids)]
                doc.adjudications.append(decision)
        return MergeResult(len(new), len(newer), len(decisions))


@dataclass(frozen=True)
class MergeResult:
    """What `AnnotationStore.merge` brought in."""

    added: int
    #: Other readers' lesions replaced by their newer version.
    updated: int
    adjudications: int

    @property
    def anything(self) -> bool:
        return bool(self.added or self.updated or self.adjudications)

    def describe(self) -> str:
        """In words, e.g. "3 lesion(s), 1 updated, 1 adjudication(s)": lesions always, the rest when not zero."""
        parts = [f"{self.added} lesion(s)"]
        if self.updated:
            parts.append(f"{self.updated} updated")
        if self.adjudications:
            parts.append(f"{self.adjudications} adjudication(s)")
        return ", ".join(parts)


def _lock_pids(lock: Path) -> list[int]:
    """The PIDs in `lock`, one per line: every session that has the series open; [] when unreadable."""
    try:
        return list(dict.fromkeys(int(line) for line in lock.read_text().split()))
    except (OSError, ValueError):
        return []


def _other_sessions(pids: list[int]) -> list[int]:
    """The processes of other sessions that have the series open: the lock's `pids` that still run
    liverview (`liverview_alive`), not this process."""
    return [pid for pid in pids if pid != os.getpid() and liverview_alive(pid)]


def _encode(snapshot: dict) -> str:
    """An annotation document's dict as its file's text."""
    return json.dumps(snapshot, indent=1, ensure_ascii=False)
