"""Wires the model worker, the prediction panel and the heatmap overlay into the main window.

The GUI thread only sends requests and applies answers: results are stored with the lesion
(`AnnotationStore.set_ai_result`, autosaved and exported with it), heatmaps are cached per lesion
outline and slice, and the overlay follows the slice on screen by asking the worker for the map of
each slice the lesion covers (at most one such request in flight; scrolling fast skips slices).
"""
from __future__ import annotations

import gc
import logging
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from PySide6.QtCore import QObject, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QDockWidget, QFileDialog, QLabel, QMainWindow, QMenu

from liverview.annotations.document import Lesion
from liverview.annotations.labels import LabelTaxonomy
from liverview.annotations.measurements import slice_long_axis_mm
from liverview.annotations.store import ChangeEvent, ChangeKind, Changed
from liverview.gui.heatmap_overlay import HeatmapOverlay
from liverview.gui.model_worker import ModelDescription, ModelWorker
from liverview.gui.prediction_panel import PredictionPanel
from liverview.gui.series_browser import phase_caption
from liverview.gui.viewer import Viewer
from liverview.imaging.contrast_phase import PhaseDecision
from liverview.model.phase_reader import answered_by_reader
from liverview.paths import default_model_path
from liverview.session import Session

if TYPE_CHECKING:
    from liverview.model.classify import Heatmap, LesionPrediction

log = logging.getLogger(__name__)

DEVICES = (("auto", "Automatic (CUDA when available)"), ("cpu", "CPU"), ("cuda", "CUDA GPU"))
AUTO_CLASSIFY_DELAY_MS = 400


class ModelHost(Protocol):
    """What the Model panel needs of the main window, besides the session it reads lesions from."""

    settings: QSettings
    taxonomy: LabelTaxonomy
    viewer: Viewer

    def add_action(self, menu: QMenu, text: str, slot: Callable[[], object], shortcut: object = None) -> QAction: ...

    def show_status(self, text: str, msecs: int = 4000) -> None: ...

    def show_failure(self, title: str, message: str) -> None: ...

    def reader_name(self, ask: bool = True) -> str: ...

    def may_edit(self, lesion: Lesion) -> bool: ...


class ClassificationController(QObject):
    def __init__(self, window: QMainWindow, host: ModelHost, session: Session) -> None:
        super().__init__(window)
        self.window = window
        self.host = host
        self.session = session
        self.settings = host.settings
        self.worker = ModelWorker(self, threads=1)
        self.panel = PredictionPanel()
        self.panel.slice_number = host.viewer.slice_number
        self.dock = QDockWidget("Model", window)
        self.dock.setObjectName("model")
        self.dock.setWidget(self.panel)
        window.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.overlay = HeatmapOverlay(host.viewer.views[0])
        self.status_label = QLabel("Model: not loaded")
        self.status_label.setTextFormat(Qt.PlainText)
        window.statusBar().addPermanentWidget(self.status_label)

        self.model: ModelDescription | None = None
        self.model_path = Path(str(self.settings.value("model/path", "") or default_model_path()))
        self.pending: dict[int, tuple[str, int]] = {}  # job -> (lesion id, outline key)
        self.batch_geometry: dict[str, int] = {}  # lesion id -> outline key, for the running batch
        self.heatmaps: dict[tuple[str, int, int], Heatmap] = {}  # (lesion id, outline key, slice) -> map
        self.explained: dict[tuple[str, int], str] = {}  # (lesion id, outline key) -> class the maps explain
        # (lesion id, outline key) -> what the network saw of each phase, and the heatmap over it
        self.crops: dict[tuple[str, int], tuple[dict, object]] = {}
        self.batch_job: int | None = None
        self.heatmap_job: int | None = None
        self.wanted_heatmap: tuple[str, int, int] | None = None
        self.last_error = ""
        self._quiet_load = False
        self._auto_lesion: str | None = None
        self._auto_timer = QTimer(self)
        self._auto_timer.setSingleShot(True)
        self._auto_timer.setInterval(AUTO_CLASSIFY_DELAY_MS)
        self._auto_timer.timeout.connect(self._auto_classify)

        self.panel.classify_requested.connect(self.classify_selected)
        self.panel.classify_all_requested.connect(self.classify_all)
        self.panel.cancel_requested.connect(self.cancel_batch)
        self.panel.accept_requested.connect(self.accept_label)
        self.panel.heatmap_toggled.connect(self.overlay.set_enabled)
        self.panel.opacity_changed.connect(self.overlay.set_opacity)
        self.worker.model_loaded.connect(self._on_model_loaded)
        self.worker.model_failed.connect(self._on_model_failed)
        self.worker.result.connect(self._on_result)
        self.worker.heatmap.connect(self._on_heatmap)
        self.worker.job_failed.connect(self._on_job_failed)
        self.worker.batch_progress.connect(self._on_batch_progress)
        self.worker.batch_finished.connect(self._on_batch_finished)
        host.viewer.slice_changed.connect(lambda *_: self.follow_slice())

    # -- menus -----------------------------------------------------------------------------------
    def add_actions(self, file_menu: QMenu, before_menu: QMenu) -> None:
        """File → Load model… and a Model menu placed before `before_menu`."""
        load = QAction("Load &model…", self.window)
        load.triggered.connect(lambda _checked=False: self.choose_model())
        file_menu.insertAction(file_menu.actions()[-1], load)
        file_menu.insertSeparator(file_menu.actions()[-1])
        model_menu = QMenu("&Model", self.window)
        self.window.menuBar().insertMenu(before_menu.menuAction(), model_menu)
        self.host.add_action(model_menu, "Classify selected lesion", self.classify_selected, "K")
        self.host.add_action(model_menu, "Classify all lesions", self.classify_all, "Shift+K")
        self.host.add_action(model_menu, "Accept model's label for the selected lesion", self.accept_label,
                            "Ctrl+Shift+A")
        auto = QAction("Classify outlines automatically when finished", self.window, checkable=True)
        auto.setChecked(self.settings.value("model/auto_classify", "false") in (True, "true"))
        auto.toggled.connect(lambda on: self.settings.setValue("model/auto_classify", on))
        model_menu.addAction(auto)
        self.auto_action = auto
        model_menu.addSeparator()
        self.host.add_action(model_menu, "Load model…", self.choose_model)
        self.host.add_action(model_menu, "Use the bundled model", lambda: self.load_model(default_model_path()))
        devices = model_menu.addMenu("Device")
        group = QActionGroup(self.window)
        current = self.device_preference()
        for key, text in DEVICES:
            action = QAction(text, self.window, checkable=True)
            action.setChecked(key == current)
            action.triggered.connect(lambda _checked=False, k=key: self.set_device(k))
            group.addAction(action)
            devices.addAction(action)

    # -- model -----------------------------------------------------------------------------------
    def device_preference(self) -> str:
        value = str(self.settings.value("model/device", "auto") or "auto")
        return value if value in dict(DEVICES) else "auto"

    def set_device(self, key: str) -> None:
        self.settings.setValue("model/device", key)
        self.load_model(self.model_path)

    def ensure_model(self, quiet: bool = False) -> None:
        """Start loading the active model unless it is loaded or on its way (torch loads with it).
        `quiet`: a failure only shows in the status bar (a background preload nobody asked for)."""
        if self.model is None and not self.worker.loading:
            self.load_model(self.model_path, quiet)

    def set_phase(self, decision: PhaseDecision | None) -> None:
        if decision is None:
            self.panel.set_phase("")
            return
        self.panel.set_phase(f"This series: {phase_caption(decision)}", decision.summary)

    def preload(self) -> None:
        """Load the model in the background once a CT series is open, so the first Classify is quick."""
        if self.settings.value("model/preload", True) not in (False, "false"):
            self.ensure_model(quiet=True)

    def load_model(self, path: str | Path, quiet: bool = False) -> None:
        self.status_label.setText(f"Model: loading {Path(path).name} …")
        self._quiet_load = quiet
        self.worker.load(path, self.device_preference())

    def choose_model(self) -> None:
        start = str(self.model_path.parent if self.model_path.exists() else Path.home())
        folder = QFileDialog.getExistingDirectory(self.window, "Load model bundle (folder with model.json)", start)
        if folder:
            self.load_model(folder)

    def _on_model_loaded(self, description: ModelDescription) -> None:
        # torch, torchvision and the network add a few hundred thousand long-lived objects; a full
        # garbage collection walking them all paused the window for ~200 ms several times during a
        # batch. Frozen objects are skipped by the collector (they live as long as the app anyway).
        gc.freeze()
        self.model = description
        self.model_path = description.path
        if description.path.resolve() != default_model_path().resolve():
            self.settings.setValue("model/path", str(description.path))
        else:
            self.settings.remove("model/path")
        self.heatmaps.clear()
        self.explained.clear()
        self.crops.clear()
        device = description.device.upper() if description.device.startswith("cpu") else description.device
        self.status_label.setText(f"Model: {description.name} {description.version} · {device}")
        tested_on = "Simulated test" if description.simulated else "Test"
        # Three decimals: 0.9455 shown as "0.95" read as meeting a target of 0.95 that it misses.
        quality = (f"{tested_on} macro-F1 {description.macro_f1:.3f}" if description.macro_f1 is not None
                   else "Untested: no held-out test lesions")
        if description.reader_macro_f1 is not None and description.reader_simulated == description.simulated:
            quality += f" on one phase, {description.reader_macro_f1:.3f} on four (phase reader)"
        elif description.reader_macro_f1 is not None:
            quality += (f" on one phase; phase reader {description.reader_macro_f1:.3f} on four, on "
                        + ("simulated lesions" if description.reader_simulated else "lesions not all simulated"))
        self.panel.set_model(f"{description.name} {description.version} on {device}\n{quality}",
                             description.classes, description.class_names, model_id=description.model_id,
                             by_uncertainty=description.by_uncertainty, simulated=description.simulated,
                             reader_by_uncertainty=description.reader_by_uncertainty,
                             reader_scores=description.reader_scores,
                             reader_simulated=description.reader_simulated)
        if description.device_note:
            self.host.show_status(description.device_note, 10000)
        elif description.macro_f1 is None:
            self.host.show_status(f"{description.name} {description.version} was not tested on held-out lesions: "
                                  "nobody knows how often it is right", 10000)
        self.refresh()

    def _on_model_failed(self, message: str) -> None:
        self.last_error = message
        if self._quiet_load and self.model is None:
            self.status_label.setText("Model: not available")
            self.status_label.setToolTip(message)
            return
        still = f" Still using {self.model.name} {self.model.version}." if self.model is not None else ""
        self.status_label.setText(f"Model: {self.model.name} {self.model.version}" if self.model else
                                  "Model: not loaded")
        self.host.show_failure("Cannot load the model", f"{message}\n\nA model is a folder written by liverview-train "
                                                   f"(model.json, weights.pt).{still}")
        self._clear_pending()

    # -- requests --------------------------------------------------------------------------------
    def _ready(self) -> bool:
        volume = self.session.volume
        if volume is None or self.session.store is None:
            self.host.show_status("Open a series first", 4000)
            return False
        if not volume.loaded.all():
            self.host.show_status("Wait until the series has finished loading", 4000)
            return False
        self.ensure_model()
        return True

    def selected_lesion(self) -> Lesion | None:
        return self.session.selected()

    def classify_selected(self) -> int | None:
        lesion = self.selected_lesion()
        if lesion is None:
            self.host.show_status("Select a lesion to classify (click its outline)", 4000)
            return None
        self.dock.show()
        self.dock.raise_()  # the answer must be in sight, also when K was pressed on the Lesions tab
        return self.classify(lesion)

    def classify(self, lesion: Lesion) -> int | None:
        if not self._ready():
            return None
        job = self.worker.classify(self.session.volume, lesion, study=self.session.study_context())
        self.pending[job] = (lesion.id, lesion.outline_key())
        if self.selected_lesion() is not None and self.selected_lesion().id == lesion.id:
            self.panel.show_result(None, "Classifying …")
        return job

    def classify_all(self) -> int | None:
        if not self._ready():
            return None
        lesions = [lesion for lesion in self.session.visible_lesions() if lesion.rois]
        if not lesions:
            self.host.show_status("There are no outlined lesions to classify", 4000)
            return None
        job = self.worker.classify_batch(self.session.volume, lesions, study=self.session.study_context())
        self.batch_job = job
        self.batch_geometry = {lesion.id: lesion.outline_key() for lesion in lesions}
        self.panel.show_batch(0, len(lesions))
        self.panel.set_enabled(model=True, lesion=self.selected_lesion() is not None, busy=True)
        return job

    def cancel_batch(self) -> None:
        self.worker.cancel_batch()
        self.host.show_status("Cancelling: the batch stops after the lesion in hand", 4000)

    def accept_label(self) -> None:
        lesion = self.selected_lesion()
        if lesion is None or lesion.current_ai() is None:
            self.host.show_status("Classify the selected lesion first", 4000)
            return
        refusal = lesion.ai.refusal()
        if refusal is not None:
            self.host.show_status(refusal[:1].upper() + refusal[1:], 5000)
            return
        if not self.host.reader_name() or not self.host.may_edit(lesion):
            return
        self.session.store.accept_ai_label(lesion.id)
        name = self.host.taxonomy.name_of(lesion.ai.predicted)
        self.host.show_status(f"Label set to {name} (model suggestion, accepted by "
                                            f"{self.session.store.reader})", 5000)

    # -- answers ---------------------------------------------------------------------------------
    def _on_result(self, job: int, prediction: LesionPrediction) -> None:
        if job == self.batch_job:
            geometry = self.batch_geometry.pop(prediction.lesion_id, None)
            key = None if geometry is None else (prediction.lesion_id, geometry)
        else:
            key = self.pending.pop(job, None)
        store = self.session.store
        if key is None or store is None or not any(lesion.id == prediction.lesion_id for lesion in store.document.lesions):
            return  # the series was closed or the lesion deleted meanwhile
        lesion_id, geometry = key
        store.set_ai_result(lesion_id, prediction.to_ai_result(outline=geometry))
        self.explained[(lesion_id, geometry)] = prediction.predicted
        self.crops[(lesion_id, geometry)] = (prediction.phase_crops, prediction.phase_cams,
                                             # A map per phase where there are; else the one map is the one phase's.
                                             None if prediction.heatmap is None or prediction.phase_cams
                                             else prediction.heatmap.cam,
                                             prediction.enhancement_hu)
        if prediction.heatmap is not None:
            self.heatmaps[(lesion_id, geometry, prediction.heatmap.slice_index)] = prediction.heatmap
        selected = self.selected_lesion()
        if selected is not None and selected.id == lesion_id:
            self.refresh()  # the panel shows the selected lesion: other lesions' results leave it as it is

    def _on_heatmap(self, job: int, lesion_id: str, heatmap: Heatmap) -> None:
        key = self.pending.pop(job, None)
        if job == self.heatmap_job:
            self.heatmap_job = None
        if key is not None:
            self.heatmaps[(key[0], key[1], heatmap.slice_index)] = heatmap
        self.follow_slice()

    def _on_job_failed(self, job: int, lesion_id: str, message: str) -> None:
        if self.pending.pop(job, None) is None:
            return  # dropped: the series closed, or the model failed to load (already reported)
        if job == self.heatmap_job:
            self.heatmap_job = None
            log.info("no heatmap for lesion %s: %s", lesion_id, message)
            return
        self.last_error = message
        self.panel.show_result(None, "Not classified")
        self.host.show_failure("Cannot classify the lesion", message)

    def _on_batch_progress(self, job: int, done: int, total: int) -> None:
        if job == self.batch_job:
            self.panel.show_batch(done, total)

    def _on_batch_finished(self, job: int, classified: int, errors: dict, cancelled: bool) -> None:
        if job != self.batch_job:
            return
        self.batch_job = None
        self.batch_geometry.clear()
        self.panel.show_batch(1, 1)
        text = f"Classified {classified} lesion(s)" + (" — cancelled" if cancelled else "")
        if errors:
            text += f"; {len(errors)} could not be classified"
            numbers = self.session.store.document.lesion_numbers() if self.session.store is not None else {}
            self.last_error = "\n".join(f"{numbers.get(lesion_id, lesion_id) if lesion_id else 'batch'}: {reason}"
                                        for lesion_id, reason in errors.items())
            self.host.show_failure("Some lesions were not classified", self.last_error)
        self.host.show_status(text, 8000)
        self.refresh()

    def _clear_pending(self) -> None:
        self.pending.clear()
        self.batch_geometry.clear()
        self.heatmap_job = None
        if self.batch_job is not None:
            self.batch_job = None
            self.panel.show_batch(1, 1)
        self.refresh()

    # -- view ------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Panel and overlay for the selected lesion (called on selection, store and model changes)."""
        lesion = self.selected_lesion()
        busy = self.batch_job is not None
        answer = lesion.current_ai() if lesion is not None else None
        acceptable = answer is not None and answer.refusal() is None
        store = self.session.store
        not_yours = (f"This lesion is {lesion.reader}'s: its label stays their opinion. Outline it yourself, or "
                     "decide its label in the consensus (Ctrl+K)"
                     if lesion is not None and store is not None and lesion.reader != store.reader else "")
        self.panel.set_enabled(model=True, lesion=lesion is not None, has_result=acceptable, busy=busy,
                               not_yours=not_yours)
        shown = self.crops.get((lesion.id, lesion.outline_key())) if answer is not None else None
        self.panel.show_phase_crops(*(shown or ({}, {}, None, {})))
        if lesion is None:
            self.panel.show_result(None, "Select a lesion, then Classify" if self.session.store else "")
        elif answer is not None:
            # Only the phase reader's answer quotes a score by the lesion's size.
            volume = self.session.volume
            sized = volume is not None and answer.slice_index is not None and answered_by_reader(answer.model_id)
            self.panel.show_result(answer, long_axis_mm=slice_long_axis_mm(volume, lesion, answer.slice_index)
                                   if sized else None)
        elif lesion.id in self.batch_geometry or any(key[0] == lesion.id for key in self.pending.values()):
            self.panel.show_result(None, "Classifying …")
        elif lesion.ai is not None:
            said = self.host.taxonomy.name_of(lesion.ai.predicted)
            self.panel.show_result(None, f"The outline changed after the model answered ({said}); "
                                         "that answer is outdated — Classify again")
        else:
            self.panel.show_result(None, "Not classified yet")
        self.follow_slice()

    def follow_slice(self) -> None:
        """Show the selected lesion's heatmap for the slice on screen, computing it if needed."""
        lesion = self.selected_lesion()
        view = self.host.viewer.views[0]
        if lesion is None or self.session.volume is None:
            self.overlay.set_heatmap(None)
            return
        geometry = lesion.outline_key()
        explained = self.explained.get((lesion.id, geometry))
        z = view.slice_index
        cached = self.heatmaps.get((lesion.id, geometry, z))
        if cached is not None:
            self.overlay.set_heatmap(cached)
            return
        self.overlay.set_heatmap(None)
        if explained is None or not self.overlay.enabled or not lesion.rois_on(z) or self.model is None:
            return
        self.wanted_heatmap = (lesion.id, geometry, z)
        if self.heatmap_job is None:
            job = self.worker.slice_heatmap(self.session.volume, lesion, z, explained, self.session.study_context())
            self.heatmap_job = job
            self.pending[job] = (lesion.id, geometry)

    def on_store_event(self, event: ChangeEvent) -> None:
        if event.kind is ChangeKind.EDIT and event.geometry_changed and self.auto_action.isChecked() \
                and event.lesion_ids and self._still_outlined(event.lesion_ids[0]):
            self._auto_lesion = event.lesion_ids[0]
            self._auto_timer.start()
        if event.kind is ChangeKind.EDIT and event.changed == Changed.MODEL_RESULT:
            return  # _on_result refreshes once its heatmap is cached, and only for the selected lesion
        self.refresh()

    def _still_outlined(self, lesion_id: str) -> bool:
        store = self.session.store
        return store is not None and any(lesion.id == lesion_id and lesion.rois for lesion in store.document.lesions)

    def _auto_classify(self) -> None:
        store = self.session.store
        lesion = next((item for item in store.document.lesions if item.id == self._auto_lesion), None) \
            if store is not None else None
        if lesion is not None and lesion.rois:
            self.classify(lesion)

    def series_closed(self) -> None:
        self.worker.cancel_batch()
        self._clear_pending()
        self.heatmaps.clear()
        self.explained.clear()
        self.crops.clear()
        self.overlay.set_heatmap(None)

    def shutdown(self) -> None:
        self.worker.shutdown()
