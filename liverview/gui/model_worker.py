"""The one thread that touches the network: loading bundles, classifying lesions, Grad-CAM maps.

Requests are queued signals into a QObject living on a dedicated QThread, so they run one after the
other in the order sent and the network is never used by two threads at once. torch is imported
there, on first use: the window never pays for `import torch`. Results come back as queued signals;
a failure of any kind (bad bundle, out of memory, an outline outside the image) comes back as a
message and the worker goes on serving.
"""
from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from liverview.session import StudyContext
from liverview.annotations.document import Lesion
from liverview.gui.workers import start_thread
from liverview.io.volume import Volume

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ModelDescription:
    """What the GUI shows about the active model (plain data, no torch objects)."""

    path: Path
    name: str
    version: str
    model_id: str
    classes: list[str]
    class_names: list[str]
    device: str
    macro_f1: float | None
    device_note: str = ""
    #: The bundle's test metrics per uncertainty level (`uncertainty.metrics_by_uncertainty` rows), so the
    #: panel can say how often answers shown at a level were right; empty for bundles without them.
    by_uncertainty: list[dict] = field(default_factory=list)
    simulated: bool = False  # trained and tested on simulated lesions
    #: The phase reader's test (held-out where scored) macro-F1 with every phase read (None without a reader).
    reader_macro_f1: float | None = None
    #: The phase reader's test (held-out where scored) metrics per uncertainty level, per subset of phases
    #: ("arterial + portal_venous").
    reader_by_uncertainty: dict[str, list[dict]] = field(default_factory=dict)
    #: The phase reader's quoted macro-F1 per subset of phases, and per size band (`phase_reader.reader_subset_scores`).
    reader_scores: dict[str, dict] = field(default_factory=dict)
    #: Whether the lesions of the reader's scores were all simulated (`phase_reader.reader_scores_simulated`;
    #: False without a reader, as without scores).
    reader_simulated: bool = False


def _describe_error(exc: BaseException) -> str:
    text = str(exc)
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        return f"the device ran out of memory ({text.splitlines()[0] if text else type(exc).__name__})"
    return text or type(exc).__name__


class _Runner(QObject):
    """Lives on the worker thread; its slots are the jobs."""

    model_loaded = Signal(object)  # ModelDescription
    model_failed = Signal(str)
    result = Signal(int, object)  # job id, LesionPrediction
    heatmap = Signal(int, str, object)  # job id, lesion id, Heatmap
    job_failed = Signal(int, str, str)  # job id, lesion id, message
    batch_progress = Signal(int, int, int)  # job id, done, total
    batch_finished = Signal(int, int, object, bool)  # job id, classified, {lesion id: error}, cancelled
    busy = Signal(bool)

    def __init__(self) -> None:
        super().__init__()
        self.loaded: Any = None
        self.thread_ids: set[int] = set()
        self._phase_cache: tuple[tuple[str, int], Any] | None = None
        #: The study's other series, loaded for a multiphase model (by series key).
        self._volumes: dict[str, Volume] = {}

    def _note_thread(self) -> None:
        self.thread_ids.add(threading.get_ident())

    @Slot(str, str, int)
    def load(self, path: str, device_preference: str, threads: int) -> None:
        self._note_thread()
        self.busy.emit(True)
        try:
            from liverview.model.classify import load_model_with_fallback, model_id
            from liverview.model.phase_reader import (reader_by_uncertainty, reader_macro_f1, reader_scores_simulated,
                                                      reader_subset_scores)

            loaded, note = load_model_with_fallback(path, device_preference, threads)
            self.loaded = loaded
            metrics = loaded.info.get("metrics") or {}
            macro_f1 = metrics.get("macro_f1")
            self.model_loaded.emit(ModelDescription(
                path=loaded.path, name=loaded.name, version=loaded.version, model_id=model_id(loaded),
                classes=list(loaded.classes), class_names=list(loaded.class_names), device=str(loaded.device),
                macro_f1=float(macro_f1) if isinstance(macro_f1, (int, float)) else None, device_note=note,
                by_uncertainty=list(metrics.get("by_uncertainty") or []),
                simulated=bool((loaded.info.get("training_data") or {}).get("simulated")),
                reader_macro_f1=reader_macro_f1(loaded.phase_reader),
                reader_by_uncertainty=reader_by_uncertainty(loaded.phase_reader),
                reader_scores=reader_subset_scores(loaded.phase_reader),
                reader_simulated=reader_scores_simulated(loaded.phase_reader)))
        except Exception as exc:  # noqa: BLE001 - every failure reaches the user as a message
            log.error("loading model %s failed:\n%s", path, traceback.format_exc())
            self.model_failed.emit(f"{Path(path).name}: {_describe_error(exc)}")
        finally:
            self.busy.emit(False)

    def _phase(self, volume: Volume, study: StudyContext | None) -> Any:
        """The series' contrast phase: as the window knows it, else measured once per series (about
        0.15 s) on this thread."""
        if study is not None and study.phase is not None:
            return study.phase
        from liverview.model.classify import series_phase

        key = (volume.info.key, id(volume))
        if self._phase_cache is None or self._phase_cache[0] != key:
            self._phase_cache = (key, series_phase(volume))
        return self._phase_cache[1]

    def _others(self, study: StudyContext | None) -> list[Any]:
        """The study's other series a multiphase model reads, loaded once each (on this thread)."""
        from liverview.model.classify import phases_read_by

        reads = phases_read_by(self._require_model())
        if study is None or not reads:
            return []
        from liverview.annotations.export_dataset import PhaseSource
        from liverview.io.volume import load_series

        sources = []
        for info, phase, decided_by in study.other_series:
            if phase not in reads:
                continue
            if info.key not in self._volumes:
                self._volumes[info.key] = load_series(info)
            sources.append(PhaseSource(phase, self._volumes[info.key], decided_by))
        return sources

    def _require_model(self) -> Any:
        if self.loaded is None:
            raise RuntimeError("no model is loaded")
        return self.loaded

    @Slot(int, object, object, bool, object)
    def classify(self, job: int, volume: Volume, lesion: Lesion, heatmap: bool, study: StudyContext | None) -> None:
        self._note_thread()
        self.busy.emit(True)
        try:
            from liverview.model.classify import classify_lesion

            self.result.emit(job, classify_lesion(self._require_model(), volume, lesion, heatmap=heatmap,
                                                  phase=self._phase(volume, study), other_phases=self._others(study)))
        except Exception as exc:  # noqa: BLE001
            log.warning("classifying lesion %s failed: %s", lesion.id, exc, exc_info=not _expected(exc))
            self.job_failed.emit(job, lesion.id, _describe_error(exc))
        finally:
            self.busy.emit(False)

    @Slot(int, object, object, object, object)
    def classify_batch(self, job: int, volume: Volume, lesions: list[Lesion], stop: threading.Event,
                       study: StudyContext | None) -> None:
        self._note_thread()
        self.busy.emit(True)
        try:
            from liverview.model.classify import classify_lesions

            batch = classify_lesions(self._require_model(), volume, lesions, heatmap=True, phase=self._phase(volume, study),
                                     other_phases=self._others(study),
                                     progress=lambda done, total, _text: self.batch_progress.emit(job, done, total),
                                     should_stop=stop.is_set, on_result=lambda p: self.result.emit(job, p))
            self.batch_finished.emit(job, len(batch.predictions), batch.errors, batch.cancelled)
        except Exception as exc:  # noqa: BLE001
            log.error("batch classification failed:\n%s", traceback.format_exc())
            self.batch_finished.emit(job, 0, {"": _describe_error(exc)}, False)
        finally:
            self.busy.emit(False)

    @Slot(int, object, object, int, str, object)
    def slice_heatmap(self, job: int, volume: Volume, lesion: Lesion, slice_index: int, explained: str,
                      study: StudyContext | None) -> None:
        self._note_thread()
        try:
            from liverview.model.classify import compute_slice_heatmap

            self.heatmap.emit(job, lesion.id, compute_slice_heatmap(
                self._require_model(), volume, lesion, slice_index, explained,
                phase=self._phase(volume, study).phase.value, other_phases=self._others(study)))
        except Exception as exc:  # noqa: BLE001
            log.warning("heatmap of lesion %s on slice %d failed: %s", lesion.id, slice_index, exc,
                        exc_info=not _expected(exc))
            self.job_failed.emit(job, lesion.id, _describe_error(exc))


def _expected(exc: BaseException) -> bool:
    """Errors that are the input's fault get a one-line log entry, not a traceback."""
    from liverview.model.classify import ClassificationError

    return isinstance(exc, ClassificationError)


class ModelWorker(QObject):
    """GUI-side handle of the model thread. Every method returns at once; answers come as signals."""

    model_loaded = Signal(object)
    model_failed = Signal(str)
    result = Signal(int, object)
    heatmap = Signal(int, str, object)
    job_failed = Signal(int, str, str)
    batch_progress = Signal(int, int, int)
    batch_finished = Signal(int, int, object, bool)
    busy = Signal(bool)

    _load = Signal(str, str, int)
    _classify = Signal(int, object, object, bool, object)
    _classify_batch = Signal(int, object, object, object, object)
    _slice_heatmap = Signal(int, object, object, int, str, object)

    def __init__(self, parent: QObject | None = None, threads: int = 1) -> None:
        super().__init__(parent)
        self.threads = threads
        self.description: ModelDescription | None = None
        self.loading = False
        self._jobs = 0
        self._batch_stop: threading.Event | None = None
        self._thread = QThread()
        self._thread.setObjectName("liverview-model")
        self._runner = _Runner()
        self._runner.moveToThread(self._thread)
        self._load.connect(self._runner.load)
        self._classify.connect(self._runner.classify)
        self._classify_batch.connect(self._runner.classify_batch)
        self._slice_heatmap.connect(self._runner.slice_heatmap)
        for name in ("result", "heatmap", "job_failed", "batch_progress", "batch_finished", "busy"):
            getattr(self._runner, name).connect(getattr(self, name))
        self._runner.model_loaded.connect(self._on_loaded)
        self._runner.model_failed.connect(self._on_failed)

    def _start(self) -> None:
        """The thread starts with the first request: a window that never classifies never has one."""
        if not self._thread.isRunning():
            start_thread(self._thread)

    @property
    def worker_thread_ids(self) -> set[int]:
        """Python thread ids the jobs ran on (tests check they never include the GUI thread)."""
        return set(self._runner.thread_ids)

    def _next_job(self) -> int:
        self._jobs += 1
        return self._jobs

    def load(self, path: str | Path, device: str = "auto") -> None:
        self.loading = True
        self._start()
        self._load.emit(str(path), device, self.threads)

    def _on_loaded(self, description: ModelDescription) -> None:
        self.loading = False
        self.description = description
        self.model_loaded.emit(description)

    def _on_failed(self, message: str) -> None:
        self.loading = False
        self.model_failed.emit(message)

    def classify(self, volume: Volume, lesion: Lesion, heatmap: bool = True, study: StudyContext | None = None) -> int:
        """Queue one lesion (a snapshot: later edits in the GUI do not race with the worker). `study`: the
        series' contrast phase as the reader sees it and the study's other series (None: the phase is
        measured on the worker from the images, and no other phase is read)."""
        job = self._next_job()
        self._start()
        self._classify.emit(job, volume, lesion.snapshot(), heatmap, study)
        return job

    def classify_batch(self, volume: Volume, lesions: list[Lesion], study: StudyContext | None = None) -> int:
        self.cancel_batch()
        self._batch_stop = threading.Event()
        job = self._next_job()
        self._start()
        self._classify_batch.emit(job, volume, [lesion.snapshot() for lesion in lesions], self._batch_stop, study)
        return job

    def cancel_batch(self) -> None:
        if self._batch_stop is not None:
            self._batch_stop.set()

    def slice_heatmap(self, volume: Volume, lesion: Lesion, slice_index: int, explained: str,
                      study: StudyContext | None = None) -> int:
        job = self._next_job()
        self._start()
        self._slice_heatmap.emit(job, volume, lesion.snapshot(), slice_index, explained, study)
        return job

    def shutdown(self, wait_ms: int = 5000) -> None:
        """Stop after the job in hand (a batch stops between lesions)."""
        self.cancel_batch()
        if self._thread.isRunning():
            self._thread.quit()
            if not self._thread.wait(wait_ms):
                log.warning("the model thread did not stop within %d ms", wait_ms)
