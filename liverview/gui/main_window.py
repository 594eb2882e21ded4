"""liverview's main window: series browser, linked views, menus, status bar, background loading."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QHBoxLayout, QInputDialog, QLabel, QLineEdit, QMainWindow,
                               QMessageBox, QProgressBar, QPushButton, QSplitter, QStackedWidget, QToolBar,
                               QVBoxLayout, QWidget)

from liverview import __version__
from liverview.annotations.document import AnnotationDocument
from liverview.annotations.export import EXPORT_FORMATS, ExportResult, export_annotations
from liverview.annotations.export_selection import ExportReaders, default_readers
from liverview.annotations.export_dataset import PhaseSource
from liverview.annotations.seg_lesions import import_seg_document
from liverview.annotations.labels import LabelTaxonomy
from liverview.annotations.measurements import lesion_key_slice
from liverview.annotations.store import AnnotationStore
from liverview.gui.annotator import TOOLS, Annotator, Tool
from liverview.gui.classification import ClassificationController
from liverview.gui.consensus_dialog import ConsensusDialog
from liverview.gui.export_dialog import ExportDialog
from liverview.gui.lesion_panel import AddLabelDialog, LesionPanel
from liverview.gui.pacs_controller import PacsController, SendSource
from liverview.gui.seg_offer import SegOffer
from liverview.gui.series_browser import SeriesBrowser
from liverview.gui.viewer import CursorInfo, Viewer
from liverview.gui.workers import BackgroundTask
from liverview.imaging.contrast_phase import PhaseDecision, detect_series_phases
from liverview.imaging.thumbnail import make_thumbnail
from liverview.imaging.window import CT_PRESETS, WindowPreset
from liverview.io.pixels import FrameDecodeError
from liverview.io.process_pool import declare_threads_outside_python
from liverview.io.seg_import import SegImportError
from liverview.io.series import ScanResult, SeriesInfo, scan_paths
from liverview.io.volume import Volume, allocate_volume, fill_volume, load_series, pick_series, read_slice
from liverview.paths import demo_study_dir, multiphase_demo_dir, user_data_dir
from liverview.session import Session

log = logging.getLogger(__name__)

HELP_TEXT = """Mouse
  Wheel                 next / previous slice (toward you: toward the feet)
  Ctrl + wheel          zoom
  Left drag             window/level (horizontal: width, vertical: level)
  Left click            move the crosshair (all views follow)
  Middle drag           pan
  Right drag            zoom

Keyboard
  Up / Down, Left / Right   previous / next slice
  Page Up / Page Down       jump 10 % of the series
  Home / End                first / last slice (slice 1: the top of an axial series)
  1 2 3 4                   Liver, Abdomen, Bone, Lung window
  5                         the series' own window (from the DICOM header)
  F                         fit to window
  R                         reset view (fit, centre, default window)
  Ctrl+O                    open folder;  Ctrl+Shift+O  open files / zip / DICOMDIR
  Ctrl+D                    open the demo study;  Ctrl+Shift+D  the four-phase demo

Annotation tools (on the axial view)
  W  window/level (no tool)      V  select / move / edit vertices
  X  rectangle    O  ellipse     P  polygon (click points; double-click or Enter closes)
  D  freehand     B  brush       E  eraser        [ ]  brush size
  A  one-click outline: click inside a lesion for a proposed contour
  C  copy the selected lesion's outline onto this slice (then adjust it)
  Ctrl+N  new lesion (starts unlabelled)
  Ctrl+1…9  label the selected lesion       Delete / Shift+Delete  delete outline / lesion
  Ctrl+Z  undo      Ctrl+Shift+Z  redo      Esc  cancel the shape being drawn

Model (research use only)
  K  classify the selected lesion     Shift+K  classify all lesions of the series
  Ctrl+Shift+A  accept the model's top class as the selected lesion's label
"""


def scan_with_thumbnails(paths: list[str], progress, should_stop, report) -> ScanResult:
    """Scan (publishing the series found so far while it reads), publish the result at once, then one
    thumbnail per series as it is made, then the contrast phase of every series."""
    scan = scan_paths(paths, progress=progress, should_stop=should_stop, on_partial=report)
    report(scan)
    for info in scan.series:
        if should_stop():
            break
        try:
            image = read_slice(info, info.n_images // 2)
        except FrameDecodeError:
            continue
        report((info.key, make_thumbnail(image, info.is_ct, invert=info.image.photometric == "MONOCHROME1")))
    if not should_stop():
        report(detect_series_phases(scan.series, should_stop=should_stop))
    return scan


def load_progressively(info: SeriesInfo, progress, should_stop, report) -> Volume:
    """Load a series, publishing the volume as soon as its middle slice is in memory."""
    volume = allocate_volume(info)
    shown = False

    def on_slice(vol: Volume, _z: int) -> None:
        nonlocal shown
        if not shown:
            shown = True
            report(vol)

    fill_volume(volume, progress=progress, should_stop=should_stop, on_slice=on_slice, shown=True)
    if not shown:
        report(volume)
    return volume


class WelcomePage(QWidget):
    def __init__(self, open_folder, open_demo, open_multiphase_demo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        title = QLabel("liverview")
        title.setStyleSheet("font-size: 28pt; font-weight: 300; color: #c8c8c8;")
        subtitle = QLabel("Open a liver CT/MR study from a folder, CD (DICOMDIR) or zip — or try a demo study.")
        subtitle.setStyleSheet("color: #9a9a9a;")
        self.open_button = QPushButton("Open study…")
        self.demo_button = QPushButton("Open demo study")
        self.multiphase_button = QPushButton("Four-phase demo")
        self.multiphase_button.setToolTip("A simulated liver in non-contrast, arterial, portal-venous and delayed "
                                          "phases, a lesion of each class: the model reads every phase")
        for button in (self.open_button, self.demo_button, self.multiphase_button):
            button.setMinimumSize(200, 44)
            button.setStyleSheet("font-size: 12pt;")
        self.open_button.clicked.connect(open_folder)
        self.demo_button.clicked.connect(open_demo)
        self.multiphase_button.clicked.connect(open_multiphase_demo)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.open_button)
        for button in (self.demo_button, self.multiphase_button):
            buttons.addSpacing(16)
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addStretch(2)
        for widget in (title, subtitle):
            layout.addWidget(widget, 0, Qt.AlignHCenter)
        layout.addSpacing(24)
        layout.addLayout(buttons)
        layout.addStretch(3)


#: An export's finished message names its files up to this many, else counts them.
EXPORT_FILES_LISTED = 6


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None) -> None:
        super().__init__()
        declare_threads_outside_python()  # Qt's threads: its worker processes must not be forked
        self.settings = settings or QSettings()
        self.setWindowTitle("liverview")
        self.setAcceptDrops(True)
        #: The open study, Qt-free: series, phases, volume, annotations, selection, readers, tasks.
        self.session = Session()
        self._shown_phase: PhaseDecision | None = None
        self.scan_task: BackgroundTask | None = None
        self.load_task: BackgroundTask | None = None
        self.demo_task: BackgroundTask | None = None
        #: A Series Instance UID to open when the next scan completes, instead of the largest axial CT.
        self._open_first: str | None = None
        self.export_task: BackgroundTask | None = None
        #: "Recovered N lesion(s)…", said again with "Loaded N slices" (which would replace it).
        self._recovery_note = ""
        #: The tasks whose progress the status bar shows (a PACS transfer shows its own).
        self._progress_tasks: set[BackgroundTask] = set()
        self.last_message = ""
        self.presets = self._read_presets()
        self.taxonomy = LabelTaxonomy.load(user_data_dir() / "labels.json")
        self.annotator: Annotator | None = None

        self.browser = SeriesBrowser()
        self.browser.series_activated.connect(self.open_series)
        self.browser.phase_correction_requested.connect(self.correct_phase)
        self.viewer = Viewer()
        self.welcome = WelcomePage(self.choose_folder, self.open_demo, self.open_multiphase_demo)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.welcome)
        self.stack.addWidget(self.viewer)
        splitter = QSplitter(Qt.Horizontal)
        splitter.addWidget(self.browser)
        splitter.addWidget(self.stack)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([300, 1100])
        self.splitter = splitter
        self.setCentralWidget(splitter)
        self.browser.hide()  # shown with the first scan; the welcome page stands alone until then

        self.lesion_panel = LesionPanel()
        self.lesion_panel.set_taxonomy(self.taxonomy)
        self.lesion_dock = QDockWidget("Lesions", self)
        self.lesion_dock.setObjectName("lesions")
        self.lesion_dock.setWidget(self.lesion_panel)
        self.addDockWidget(Qt.RightDockWidgetArea, self.lesion_dock)
        self.resizeDocks([self.lesion_dock], [470], Qt.Horizontal)
        self.lesion_panel.label_chosen.connect(self.apply_label)
        self.lesion_panel.confidence_chosen.connect(lambda c: self._edit_selected(confidence=c))
        self.lesion_panel.note_edited.connect(lambda n: self._edit_selected(note=n))
        self.lesion_panel.lesion_clicked.connect(self.jump_to_lesion)
        self.lesion_panel.readers_visibility.connect(self._set_hidden_readers)
        self.lesion_panel.add_label_requested.connect(self.add_label)

        self._build_status_bar()
        self._build_menus()
        self._update_undo_actions()
        self._build_tools()
        self.classification = ClassificationController(self, self, self.session)
        self.classification.add_actions(self.file_menu, self.help_menu)
        self.tabifyDockWidget(self.lesion_dock, self.classification.dock)
        # SEGs that come with a study (its folder, or a PACS retrieve) are offered as lesions.
        self.seg_offers = SegOffer(self, lambda: self.volume, self.import_seg, self.register_task)
        # PACS (#17): File → Query PACS…, Send to PACS…; a retrieved study opens like a folder.
        self.pacs = PacsController(self, self)
        self.pacs.add_actions(self.file_menu)
        self.lesion_dock.raise_()
        self.viewer.cursor_info.connect(self._show_cursor)
        self.viewer.slice_changed.connect(lambda z, n: self.slice_label.setText(f"Slice {self.viewer.slice_number(z)}/{n}"))
        self.viewer.window_changed.connect(self._remember_window)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setInterval(250)
        self._refresh_timer.timeout.connect(self._refresh_loading_views)
        # The autosave writes on its own thread: a failed write (a full disk) is looked for here, so that it
        # shows within a second and stays shown until a write succeeds.
        self._save_check = QTimer(self)
        self._save_check.setInterval(1000)
        self._save_check.timeout.connect(self._show_save_state)
        self._save_check.start()
        self._restore_settings()

    # -- construction ----------------------------------------------------------------------------
    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.slice_label, self.position_label, self.pixel_label, self.value_label = (QLabel() for _ in range(4))
        for label in (self.slice_label, self.position_label, self.pixel_label, self.value_label):
            label.setTextFormat(Qt.PlainText)
            label.setMinimumWidth(90)
        self.position_label.setMinimumWidth(230)
        # The reader name outlives the session (one workstation, several readers): it stays in sight, and
        # a click on it changes it.
        self.reader_label = QPushButton(f"Reader: {self.settings.value('reader/name', '') or '(not set)'}")
        self.reader_label.setFlat(True)
        self.reader_label.setCursor(Qt.PointingHandCursor)
        self.reader_label.setToolTip("Who is reading: recorded on every outline and label. Click to change.")
        self.reader_label.clicked.connect(self.edit_settings)
        self.warning_button = QPushButton()
        self.warning_button.setFlat(True)
        self.warning_button.setStyleSheet("color: #f0b040;")
        self.warning_button.clicked.connect(self.show_warnings)
        self.warning_button.hide()
        self.unsaved_label = QLabel()
        self.unsaved_label.setTextFormat(Qt.PlainText)
        self.unsaved_label.setStyleSheet("color: #ff6060; font-weight: bold;")
        self.unsaved_label.hide()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_tasks)
        for widget in (self.progress, self.cancel_button):
            widget.hide()
        for widget in (self.unsaved_label, self.reader_label, self.warning_button, self.slice_label, self.position_label,
                       self.pixel_label, self.value_label, self.progress, self.cancel_button):
            bar.addPermanentWidget(widget)

    def _build_menus(self) -> None:
        file_menu = self.file_menu = self.menuBar().addMenu("&File")
        self.add_action(file_menu, "Open &folder…", self.choose_folder, QKeySequence.Open)
        self.add_action(file_menu, "Open files, zip or DICOMDIR…", self.choose_files, "Ctrl+Shift+O")
        self.add_action(file_menu, "Open &demo study", self.open_demo, "Ctrl+D")
        self.add_action(file_menu, "Open four-phase demo study", self.open_multiphase_demo, "Ctrl+Shift+D")
        file_menu.addSeparator()
        self.add_action(file_menu, "Import annotations (colleague's file, ground truth)…", self.choose_annotations)
        self.add_action(file_menu, "Import DICOM SEG…", self.choose_seg)
        self.add_action(file_menu, "&Export…", self.choose_export, "Ctrl+E")
        self.add_action(file_menu, "Show skipped files…", self.browser.show_skipped)
        self.add_action(file_menu, "Settings (reader name)…", self.edit_settings)
        file_menu.addSeparator()
        self.add_action(file_menu, "&Quit", self.close, QKeySequence.Quit)

        edit_menu = self.menuBar().addMenu("&Edit")
        self.undo_action = self.add_action(edit_menu, "Undo", self.undo, QKeySequence.Undo)
        self.redo_action = self.add_action(edit_menu, "Redo", self.redo, ["Ctrl+Shift+Z", "Ctrl+Y"])
        edit_menu.addSeparator()
        self.add_action(edit_menu, "New lesion (unlabelled)", lambda: self._annotator_call("start_new_lesion"), "Ctrl+N")
        self.add_action(edit_menu, "Delete selected outline", lambda: self._annotator_call("delete_selected_outline"),
                     [QKeySequence.Delete, Qt.Key_Backspace])
        self.add_action(edit_menu, "Delete selected lesion", lambda: self._annotator_call("delete_selected_lesion"),
                     "Shift+Delete")
        self.add_action(edit_menu, "Copy outline onto this slice", lambda: self._annotator_call("copy_outline_here"), "C")
        self.add_action(edit_menu, "Close polygon", lambda: self._annotator_call("finish_polygon"), [Qt.Key_Return, Qt.Key_Enter])
        self.add_action(edit_menu, "Cancel shape", lambda: self._annotator_call("cancel"), Qt.Key_Escape)
        self.add_action(edit_menu, "Smaller brush", lambda: self._brush_size(-1), "[")
        self.add_action(edit_menu, "Larger brush", lambda: self._brush_size(1), "]")
        edit_menu.addSeparator()
        self.add_action(edit_menu, "Consensus of readers…", self.show_consensus, "Ctrl+K")
        self.label_menu = edit_menu.addMenu("Label selected lesion")
        self._fill_label_menu()

        view_menu = self.menuBar().addMenu("&View")
        for number, preset in enumerate(self.presets[:4], start=1):
            self.add_action(view_menu, f"{preset.name} window (W {preset.width:g} / L {preset.center:g})",
                         lambda p=preset: self.viewer.apply_preset(p), str(number))
        self.add_action(view_menu, "Series window (from DICOM)", self.apply_series_window, "5")
        view_menu.addSeparator()
        self.add_action(view_menu, "&Fit to window", self.viewer.fit, "F")
        self.add_action(view_menu, "&Reset view", self.viewer.reset, "R")
        toggle = self.browser_dock_action = QAction("Series browser", self, checkable=True, checked=True)
        toggle.toggled.connect(self.browser.setVisible)
        view_menu.addAction(toggle)
        view_menu.addAction(self.lesion_dock.toggleViewAction())

        nav = self.menuBar().addMenu("&Navigate")
        self.add_action(nav, "Previous slice", lambda: self.viewer.scroll(-1), [Qt.Key_Up, Qt.Key_Left])
        self.add_action(nav, "Next slice", lambda: self.viewer.scroll(1), [Qt.Key_Down, Qt.Key_Right])
        self.add_action(nav, "Jump back", lambda: self.viewer.scroll(-self._jump()), QKeySequence.MoveToPreviousPage)
        self.add_action(nav, "Jump forward", lambda: self.viewer.scroll(self._jump()), QKeySequence.MoveToNextPage)
        self.add_action(nav, "First slice", lambda: self.viewer.scroll(-10**6), Qt.Key_Home)
        self.add_action(nav, "Last slice", lambda: self.viewer.scroll(10**6), Qt.Key_End)

        help_menu = self.help_menu = self.menuBar().addMenu("&Help")
        self.add_action(help_menu, "Mouse and keyboard…", self.show_help, QKeySequence.HelpContents)
        self.add_action(help_menu, "About liverview", self.show_about)

    def add_action(self, menu, text, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            shortcuts = shortcut if isinstance(shortcut, list) else [shortcut]
            action.setShortcuts([QKeySequence(s) for s in shortcuts])
            action.setShortcutContext(Qt.WindowShortcut)
        # triggered(bool) would otherwise land in the slot's first (default) argument.
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        return action

    def _build_tools(self) -> None:
        bar = QToolBar("Tools", self)
        bar.setObjectName("tools")
        self.addToolBar(Qt.TopToolBarArea, bar)
        self.tool_actions: dict[Tool, QAction] = {}
        group = QActionGroup(self)
        group.setExclusive(True)
        for tool, text, key in TOOLS:
            action = QAction(f"{text} ({key})", self, checkable=True)
            action.setShortcut(QKeySequence(key))
            action.setShortcutContext(Qt.WindowShortcut)
            action.triggered.connect(lambda _checked=False, t=tool: self.set_tool(t))
            group.addAction(action)
            bar.addAction(action)
            self.tool_actions[tool] = action
        self.tool_actions[Tool.NAVIGATE].setChecked(True)
        bar.addSeparator()
        bar.addAction(self.undo_action)
        bar.addAction(self.redo_action)
        self.tool_bar = bar

    def _fill_label_menu(self) -> None:
        self.label_menu.clear()
        for label in self.taxonomy:
            action = QAction(label.name, self)
            if label.shortcut:
                action.setShortcut(QKeySequence(label.shortcut))
                action.setShortcutContext(Qt.WindowShortcut)
            action.triggered.connect(lambda _checked=False, i=label.id: self.apply_label(i))
            self.label_menu.addAction(action)
            self.addAction(action)

    def _jump(self) -> int:
        view = self.viewer.active
        return max(1, view.n_slices() // 10) if view.volume is not None else 1

    # -- annotations -----------------------------------------------------------------------------
    def reader_name(self, ask: bool = True) -> str:
        """The reader recorded on every annotation: set once in Settings (asked at the first edit)."""
        name = str(self.settings.value("reader/name", "") or "").strip()
        if not name and ask:
            name, ok = QInputDialog.getText(self, "Reader name", "Your name as it should appear on your annotations:",
                                            QLineEdit.Normal, "")
            name = name.strip() if ok else ""
            if name:
                self._set_reader(name)
        return name

    def edit_settings(self) -> None:
        current = str(self.settings.value("reader/name", "") or "")
        name, ok = QInputDialog.getText(self, "Settings", "Reader name (recorded on every annotation):",
                                        QLineEdit.Normal, current)
        if ok and name.strip():
            self._set_reader(name.strip())

    def _set_reader(self, name: str) -> None:
        self.settings.setValue("reader/name", name)
        if self.store is not None:
            self.store.reader = name
        self.reader_label.setText(f"Reader: {name}")

    def set_tool(self, tool: Tool) -> None:
        if tool != Tool.NAVIGATE and not self.reader_name():
            self.tool_actions[Tool.NAVIGATE].setChecked(True)
            tool = Tool.NAVIGATE
        self.tool_actions[tool].setChecked(True)
        if self.annotator is not None:
            self.annotator.set_tool(tool)

    def _annotator_call(self, name: str) -> None:
        if self.annotator is not None:
            getattr(self.annotator, name)()

    def _brush_size(self, step: int) -> None:
        if self.annotator is not None:
            self.annotator.brush_radius_mm = float(np.clip(self.annotator.brush_radius_mm + step, 1, 40))
            self.statusBar().showMessage(f"Brush radius {self.annotator.brush_radius_mm:.0f} mm", 2000)

    def apply_label(self, label_id: str) -> None:
        if self.annotator is not None:
            self.annotator.apply_label(label_id)

    def add_label(self) -> None:
        dialog = AddLabelDialog(self.taxonomy, self)
        if dialog.exec() and dialog.result_label is not None:
            self.taxonomy.save(user_data_dir() / "labels.json")
            self.lesion_panel.set_taxonomy(self.taxonomy)
            self._fill_label_menu()
            self._refresh_lesions()

    def _edit_selected(self, **changes) -> None:
        lesion = self.annotator.selected() if self.annotator is not None else None
        if lesion is not None and self.annotator.is_mine(lesion):
            current = {"confidence": lesion.confidence, "note": lesion.note}
            if any(current[k] != v for k, v in changes.items()):
                self.store.set_label(lesion.id, **changes)

    def choose_annotations(self) -> None:
        if self.store is None:
            self.show_failure("Import annotations", "Open a series first.")
            return
        path, _ = QFileDialog.getOpenFileName(self, "Import annotations", str(Path.home()),
                                              "liverview annotations (*.json);;All files (*)")
        if path:
            self.import_annotations(Path(path))

    def import_annotations(self, path: Path) -> int:
        """Merge another reader's annotation file of this series (`AnnotationStore.merge`); returns the
        number of lesions added."""
        try:
            other = AnnotationDocument.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            self.show_failure("Cannot import annotations", f"{path}: {exc}")
            return 0
        if other.series_instance_uid != self.store.document.series_instance_uid:
            self.show_failure("Cannot import annotations", f"{path.name} belongs to series {other.series_instance_uid}, "
                                                    f"not to the open series {self.store.document.series_instance_uid}.")
            return 0
        merged = self.store.merge(other)
        said = f"Imported {merged.describe()}" if merged.anything else "Nothing new"
        self.statusBar().showMessage(f"{said} from {path.name}", 6000)
        return merged.added

    def show_consensus(self) -> None:
        if self.store is None or self.volume is None:
            self.show_failure("Consensus", "Open a series first.")
            return
        dialog = ConsensusDialog(self.store, self.volume, self.taxonomy, self)
        dialog.lesion_requested.connect(self.jump_to_lesion)
        self.consensus_dialog = dialog
        dialog.show()

    def choose_seg(self) -> None:
        if self.store is None:
            self.show_failure("Import DICOM SEG", "Open the series the segmentation refers to first.")
            return
        path, _ = QFileDialog.getOpenFileName(self, "Import DICOM SEG", str(Path.home()), "DICOM (*.dcm);;All files (*)")
        if path:
            self.import_seg(Path(path))

    def import_seg(self, path: Path) -> int:
        """Show a DICOM SEG's segments as lesions; says how its frames were matched to the slices."""
        try:
            known = [*self.store.document.readers(), self.reader_name(ask=False)]
            imported = import_seg_document(path, self.volume, self.taxonomy, known_readers=known)
        except (SegImportError, OSError, ValueError) as exc:
            self.show_failure("Cannot import the DICOM SEG", f"{path.name}: {exc}")
            return 0
        added = self.store.merge(imported.document).added
        how = {"sop-instance-uid": "by the referenced image UIDs"}.get(
            imported.method, "by frame of reference and slice position (the referenced image UIDs did not resolve)")
        already = len(imported.document.lesions) - added
        # Not the file's name: a retrieved SEG's is its UID, which says nothing and crowds the status bar.
        message = (f"Imported {added} lesion(s) from a DICOM SEG" + (f" ({already} already shown)" if already else "")
                   + f", matched {how}.")
        if imported.warnings:
            self._inform("DICOM SEG imported", message + "\n\n" + "\n".join(f"• {w}" for w in imported.warnings))
        self.statusBar().showMessage(message, 8000)
        return added

    def choose_export(self) -> None:
        if self.store is None or self.volume is None:
            self.show_failure("Export", "Open a series first.")
            return
        start = str(self.settings.value("paths/last_export", str(Path.home() / "liverview-exports")))
        document = self.store.document
        fmt = str(self.settings.value("paths/last_export_format", "seg"))
        dialog = ExportDialog(start, fmt, self, readers=document.readers(),
                              default=default_readers(document, self.store.reader, fmt),
                              n_adjudicated=len(document.adjudications))
        if dialog.exec():
            c = dialog.choice()
            self.export(c.fmt, c.folder, c.pseudonymize, c.labelled_only, c.readers, c.with_images)

    def export(self, fmt: str, folder: Path, pseudonymize: bool = True, labelled_only: bool = True,
               readers: ExportReaders | None = None, with_images: bool = False) -> BackgroundTask:
        """Run one export in the background; the result (or the reason it failed) is shown. `readers`
        chooses whose lesions go out (default: the consensus once a label was adjudicated)."""
        self.settings.setValue("paths/last_export", str(folder))
        self.settings.setValue("paths/last_export_format", fmt)
        self.store.flush()
        document = AnnotationDocument.from_dict(self.store.document.to_dict())
        volume, taxonomy, reader = self.volume, self.taxonomy, self.store.reader
        study = self.session.study_context()

        def job(progress, should_stop, report):
            progress(0.1, f"Exporting {EXPORT_FORMATS[fmt]}")
            phase, others = "unknown", []
            if fmt == "dataset":
                # A training dataset holds each lesion as read on the study's other phases too.
                phase = study.phase.phase.value if study.phase is not None else "unknown"
                others = [PhaseSource(p, load_series(info), how) for info, p, how in study.other_series]
            return export_annotations(volume, document, fmt, folder, taxonomy, pseudonymize, reader=reader,
                                      labelled_only=labelled_only, phase=phase, other_phases=others, readers=readers,
                                      with_images=with_images)

        task = BackgroundTask(job, self, name="export")
        task.finished.connect(lambda result: self._report_export(result, folder, labelled_only))
        task.failed.connect(lambda message: self.show_failure("Export failed", message))
        self._track(task)
        self.export_task = task
        task.start()
        return task

    def pacs_send_source(self) -> SendSource | None:
        """The open series and its annotations for Send to PACS (#17)."""
        if self.store is None or self.volume is None:
            return None
        self.store.flush()
        return SendSource(self.volume, AnnotationDocument.from_dict(self.store.document.to_dict()), self.taxonomy,
                          self.store.reader)

    def _report_export(self, result: ExportResult, folder: Path, labelled_only: bool) -> None:
        """What an export wrote, in a message that fits the screen: the files by name when there are a
        few, else their number and folder (an export with its images writes one file per slice)."""
        if result.n_lesions == 0:
            why = ("no lesion has a label, and only labelled lesions were asked for" if labelled_only
                   else "there is no lesion of the chosen readers")
            self.show_failure("Nothing exported", f"Nothing was exported to {folder}: {why}.")
            self.last_message = f"0 lesion(s) exported: {why}"
            return
        if len(result.paths) <= EXPORT_FILES_LISTED:
            where = ":\n" + "\n".join(str(p) for p in result.paths)
        else:
            where = f": {len(result.paths)} files in {folder}"
        notes = "".join(f"\n\n{note}" for note in result.notes)
        self._inform("Export finished", f"{result.n_lesions} lesion(s) exported{where}{notes}")

    def _inform(self, title: str, message: str) -> None:
        box = QMessageBox(QMessageBox.Information, title, message, QMessageBox.Ok, self)
        box.setTextFormat(Qt.PlainText)
        box.show()
        self.last_message = message

    def undo(self) -> None:
        if self.store is not None:
            self.store.undo()

    def redo(self) -> None:
        if self.store is not None:
            self.store.redo()

    def jump_to_lesion(self, lesion_id: str) -> None:
        """Show the lesion on its largest slice, crosshair on its centre, and select it."""
        if self.annotator is None or self.volume is None:
            return
        lesion = self.store.document.lesion(lesion_id)
        # The key slice the model reads (largest outline area), so that the view and its answer agree.
        key = lesion_key_slice(self.volume, lesion)
        on_key = [r for r in lesion.rois if r.slice_index == key and r.points_xy]
        roi = on_key[0] if on_key else max(lesion.rois, key=lambda r: len(r.points_xy))
        centre = np.asarray(roi.points_xy).mean(axis=0)
        self.viewer.set_cursor((roi.slice_index, centre[1], centre[0]))
        self.annotator.select(lesion_id, roi.id)

    def _set_hidden_readers(self, hidden: set) -> None:
        self.session.set_hidden_readers(hidden)
        self._refresh_lesions()

    def _open_annotations(self, volume: Volume) -> None:
        self.resolve_unsaved_annotations("switched")
        self._close_annotations()
        reader = self.reader_name(ask=False) or "reader"
        store, report = AnnotationStore.open(volume.study_uid, volume.series_uid, volume.frame_of_reference_uid,
                                             reader=reader)
        self.session.open_series(volume, store)
        self.annotator = Annotator(self.viewer, self.session, self.taxonomy)
        self.annotator.set_tool(next(t for t, a in self.tool_actions.items() if a.isChecked()))
        self.annotator.selection_changed.connect(self._on_selection)
        self.annotator.message.connect(lambda text: self.statusBar().showMessage(text, 5000))
        store.subscribe(lambda _event: self._on_store_changed())
        store.subscribe(self.classification.on_store_event)
        self._refresh_lesions()
        if report.damaged_copy is not None:
            self.show_failure("Annotation file damaged", report.problem)
        elif report.open_elsewhere_pid is not None:
            self.show_failure("Series open in another window",
                              f"This series is also open in another liverview window (process "
                              f"{report.open_elsewhere_pid}). Both save their outlines to the same file, and "
                              "the one that saves last overwrites what the other drew: close one of them "
                              "before you draw.")
        elif report.problem:
            self.show_failure("Annotations cannot be saved", report.problem[:1].upper() + report.problem[1:] + ".")
        elif report.recovered_after_crash:
            # Said again when the series has loaded: that message would replace it within a second.
            self._recovery_note = f"Recovered {len(store.document.lesions)} lesion(s) from an interrupted session"
            self.statusBar().showMessage(self._recovery_note, 10000)

    def _close_annotations(self) -> None:
        self.classification.series_closed()
        if self.annotator is not None:
            self.annotator.detach()
            self.annotator = None
        self.session.close_series()
        self._update_undo_actions()

    def _on_store_changed(self) -> None:
        self._refresh_lesions()
        self._show_open_series_phase()
        self._show_save_state()

    def _show_save_state(self) -> None:
        error = self.store.save_error if self.store is not None else ""
        if error:
            self.store.retry_save()  # in the background: space may have been freed without another edit
            self.unsaved_label.setText(f"Annotations NOT saved: {self.store.save_error_reason}")
            self.unsaved_label.setToolTip(f"{error}\n\nliverview tries again every few seconds, with every change "
                                          "and when the window closes; it asks before anything unsaved is lost.")
        self.unsaved_label.setVisible(bool(error))

    def resolve_unsaved_annotations(self, leaving: str) -> bool:
        """Write the open series' annotations; when that fails (a full disk), ask the user to save a copy
        elsewhere, try again, or give them up. `leaving` is why: "close" (the window) or "open" (another
        series or study), which the user may cancel (then False), or "switched" (already on screen).
        Changes copied elsewhere or given up are not asked about again."""
        store = self.store
        if store is None:
            return True
        store.flush()
        while store.save_error:
            choice = self.ask_about_unsaved(store.save_error, store.save_error_reason, leaving)
            if choice == "retry":
                store.flush()
            elif choice == "copy":
                target = self.choose_annotation_copy(store)
                if target is None:
                    continue
                try:
                    store.save_copy(target)
                except OSError as exc:
                    self.show_failure("Copy not saved", f"Cannot write {target}: {exc.strerror or exc}")
                    continue
                self._inform("Copy saved", f"The annotations were saved as a copy in {target}. File → Import "
                             "annotations brings them back into this series.")
                store.give_up_unsaved()
                return True
            elif choice == "discard":
                store.give_up_unsaved()
                return True
            else:
                return False
        self._show_save_state()
        return True

    def _keep_open_series_annotations(self, *_: object) -> None:
        """Another study or series was to open but did not (nothing found, a failure, Cancel): the series
        on screen stays, and so do its annotations, whatever was given up or copied for the opening -
        they are saved again, or the status bar says again that they cannot be."""
        if self.store is not None:
            self.store.save_again()

    def ask_about_unsaved(self, error: str, reason: str, leaving: str) -> str:
        """"copy", "retry", "discard" or "cancel" (not when `leaving` is "switched")."""
        box = QMessageBox(QMessageBox.Critical, "Annotations not saved",
                          f"The latest changes to this series' annotations could not be saved: "
                          f"{reason}.\n\nThey are still here. Save a copy somewhere else (a USB "
                          "stick, another disk), or free some space and try again. Giving them up keeps the "
                          "annotations as they were last saved.", parent=self)
        box.setTextFormat(Qt.PlainText)
        box.setDetailedText(error)
        buttons = {box.addButton("Save a copy…", QMessageBox.AcceptRole): "copy",
                   box.addButton("Try again", QMessageBox.ActionRole): "retry",
                   box.addButton("Close without saving" if leaving == "close" else "Give up the changes",
                                 QMessageBox.DestructiveRole): "discard"}
        cancellable = leaving != "switched"
        if cancellable:
            buttons[box.addButton(QMessageBox.Cancel)] = "cancel"
        box.exec()
        return buttons.get(box.clickedButton(), "cancel" if cancellable else "retry")

    def choose_annotation_copy(self, store: AnnotationStore) -> Path | None:
        name = store.path.name if store.path is not None else "annotations.json"
        path, _ = QFileDialog.getSaveFileName(self, "Save a copy of the annotations", str(Path.home() / name),
                                              "liverview annotations (*.json)")
        return Path(path) if path else None

    def _refresh_lesions(self) -> None:
        self._update_undo_actions()
        if self.store is None or self.volume is None:
            return
        self.lesion_panel.show_lesions(self.session.visible_lesions(), self.store.document.readers(),
                                       self.hidden_readers, self.volume, self.store.document.lesion_numbers())
        if self.annotator is not None:
            self.lesion_panel.show_selection(self.annotator.selected())

    def _update_undo_actions(self) -> None:
        """Undo/Redo name the step they would take, and are off when there is none (or no study)."""
        store = self.store
        self.undo_action.setText(f"Undo {store.undo_text()}".strip() if store else "Undo")
        self.redo_action.setText(f"Redo {store.redo_text()}".strip() if store else "Redo")
        self.undo_action.setEnabled(store is not None and store.can_undo())
        self.redo_action.setEnabled(store is not None and store.can_redo())

    def _on_selection(self, _lesion_id) -> None:
        self.lesion_panel.show_selection(self.annotator.selected() if self.annotator is not None else None)
        self.classification.refresh()

    # -- settings --------------------------------------------------------------------------------
    def _read_presets(self) -> list[WindowPreset]:
        """Sites may redefine the four presets in the settings file (presets/N/name|center|width)."""
        presets = []
        for i, default in enumerate(CT_PRESETS):
            key = f"presets/{i + 1}"
            try:
                presets.append(WindowPreset(str(self.settings.value(f"{key}/name", default.name)),
                                            float(self.settings.value(f"{key}/center", default.center)),
                                            float(self.settings.value(f"{key}/width", default.width))))
            except (TypeError, ValueError):
                presets.append(default)
        return presets

    def has_saved_geometry(self) -> bool:
        return self.settings.value("window/geometry") is not None

    def last_study(self) -> list[str]:
        """What was open when liverview last ran (kept until another study is opened), if it is still there."""
        paths = self.settings.value("session/last_study", [], type=list)
        return [str(p) for p in paths] if paths and all(Path(p).exists() for p in paths) else []

    def _restore_settings(self) -> None:
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            screen = self.screen().availableGeometry()
            self.resize(int(screen.width() * 0.9), int(screen.height() * 0.9))
        state = self.settings.value("window/splitter")
        if state is not None:
            self.splitter.restoreState(state)
        docks = self.settings.value("window/state")
        if docks is not None:
            self.restoreState(docks)

    def _remember_window(self, center: float, width: float) -> None:
        self.settings.setValue("view/last_window", [center, width, self.viewer.preset_name])

    @property
    def volume(self) -> Volume | None:
        return self.session.volume

    @property
    def store(self) -> AnnotationStore | None:
        return self.session.store

    @property
    def scan(self) -> ScanResult | None:
        return self.session.scan

    @property
    def phases(self) -> dict[str, PhaseDecision]:
        return self.session.phases

    @property
    def hidden_readers(self) -> set[str]:
        return self.session.hidden_readers

    def closeEvent(self, event):  # noqa: N802
        if not self.resolve_unsaved_annotations("close"):
            event.ignore()
            return
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/splitter", self.splitter.saveState())
        self.settings.setValue("window/state", self.saveState())
        self.settings.sync()
        self._close_annotations()
        self.session.tasks.cancel_all()
        self.session.tasks.wait_all(3000)
        self.classification.shutdown()
        super().closeEvent(event)

    # -- opening ---------------------------------------------------------------------------------
    def choose_folder(self) -> None:
        start = str(self.settings.value("paths/last_folder", str(Path.home())))
        folder = QFileDialog.getExistingDirectory(self, "Open DICOM folder", start)
        if folder:
            self.open_paths([folder])

    def choose_files(self) -> None:
        start = str(self.settings.value("paths/last_folder", str(Path.home())))
        files, _ = QFileDialog.getOpenFileNames(self, "Open DICOM files, a study zip or a DICOMDIR", start,
                                                "DICOM, zip or DICOMDIR (*)")
        if files:
            self.open_paths(files)

    def open_paths(self, paths: list[str]) -> None:
        """Scan `paths` in the background; the first series opens as soon as the scan is done."""
        if not self.resolve_unsaved_annotations("open"):
            return
        self._cancel_study_tasks()
        first = Path(paths[0])
        self.settings.setValue("paths/last_folder", str(first if first.is_dir() else first.parent))
        self.settings.setValue("session/last_study", [str(Path(p).resolve()) for p in paths])
        self.statusBar().showMessage(f"Scanning {', '.join(paths)} …")
        self._start_scan(paths, self._on_scan_partial, "Cannot open")

    def refresh_study(self, paths: list[str]) -> None:
        """Scan `paths` again for series that arrived after the study opened (a PACS retrieve opens it
        with its first complete series): the browser, phases and thumbnails are brought up to date and
        the series on screen stays open. After a scan still running, so that the later list wins."""
        if self.scan_task is not None and self.scan_task.is_running():
            # `done` (its thread has ended), not `finished`: a result already on its way to this
            # thread while the thread winds down would never be followed by another.
            self.scan_task.done.connect(lambda: self.refresh_study(paths))
            return
        self._start_scan(paths, self._on_rescan_partial, "Cannot read the study again")

    def _start_scan(self, paths: list[str], on_partial, failure_title: str) -> None:
        """A background scan of `paths` (series, then thumbnails and phases) reported to `on_partial`."""
        task = BackgroundTask(lambda progress, should_stop, report: scan_with_thumbnails(paths, progress, should_stop, report), self,
                              name="scan")
        task.partial.connect(on_partial)
        task.failed.connect(lambda message: self.show_failure(failure_title, message))
        task.failed.connect(self._keep_open_series_annotations)
        task.cancelled.connect(self._keep_open_series_annotations)
        self._track(task)
        self.scan_task = task
        task.start()

    def _on_rescan_partial(self, item) -> None:
        if isinstance(item, ScanResult) and not item.complete:
            return  # the complete list replaces the one shown, in one step
        if isinstance(item, ScanResult):
            self.session.set_scan(item)
            self.browser.set_scan(item)
            if self.volume is not None:
                self.browser.select(self.volume.info.key)
            elif item.series and not (self.load_task is not None and self.load_task.is_running()):
                self.open_series(self._default_series(item))
            return
        self._on_scan_partial(item)

    def _on_scan_partial(self, item) -> None:
        if isinstance(item, ScanResult) and not item.complete:
            if item.series:
                self.browser.set_scan(item)  # the series found so far, while the folder is still read
                self.browser.setVisible(self.browser_dock_action.isChecked())
        elif isinstance(item, ScanResult) and not item.series and self.volume is not None:
            # Nothing to open: the study on screen stays, and the title and browser keep naming it.
            self.statusBar().showMessage(f"No DICOM series found there ({len(item.skipped)} file(s) skipped); "
                                         f"{self.windowTitle().removeprefix('liverview — ')} stays open", 10000)
            self._keep_open_series_annotations()
        elif isinstance(item, ScanResult):
            self.session.set_scan(item)
            self.browser.set_scan(item)
            self.browser.setVisible(self.browser_dock_action.isChecked())
            note = f"{len(item.series)} series, {len(item.skipped)} file(s) skipped"
            self.statusBar().showMessage(note, 8000)
            if item.series:
                self.open_series(self._default_series(item))
            elif item.skipped:
                self.browser.show_skipped()
        elif isinstance(item, dict):
            self.session.set_phases(item)
            self.browser.set_phases(item)
            self._show_open_series_phase()
        else:
            key, thumbnail = item
            self.browser.set_thumbnail(key, thumbnail)

    def _show_open_series_phase(self) -> None:
        decision = self.session.series_phase()
        if decision == self._shown_phase:
            return  # most store changes are lesion edits
        self._shown_phase = decision
        self.classification.set_phase(decision)
        if decision is not None and self.volume is not None:
            self.browser.set_phases({**self.phases, self.volume.info.key: decision})

    def correct_phase(self, key: str, phase: str) -> None:
        """A reader's contrast phase for the open series ("" returns to liverview's own decision)."""
        if self.volume is None or self.store is None or key != self.volume.info.key:
            self.statusBar().showMessage("Open the series first: its phase is stored with its annotations", 5000)
            return
        if phase and not self.reader_name(ask=True):
            return
        detected = self.phases.get(key)
        self.store.set_contrast_phase(phase or None, detected.phase.value if detected is not None else "unknown")

    def _default_series(self, scan: ScanResult) -> SeriesInfo:
        """The series asked for (`_open_first`, once), else the largest axial CT if there is one (skips
        localizers), else the largest series."""
        wanted, self._open_first = self._open_first, None
        chosen = next((s for s in scan.series if s.series_uid == wanted), None)
        if chosen is not None:
            return chosen
        axial_ct = [s for s in scan.series if s.is_ct and s.plane == "axial"]
        return max(axial_ct, key=lambda s: s.n_images) if axial_ct else pick_series(scan)

    def open_series(self, info: SeriesInfo) -> None:
        if not self.resolve_unsaved_annotations("open"):
            if self.volume is not None:
                self.browser.select(self.volume.info.key)  # the browser had already moved to the one clicked
            return
        if self.load_task is not None and self.load_task.is_running():
            self.load_task.cancel()
        self.browser.select(info.key)
        task = BackgroundTask(lambda progress, should_stop, report: load_progressively(info, progress, should_stop, report), self,
                              name="load")
        task.partial.connect(self._show_volume)
        task.finished.connect(self._on_loaded)
        task.failed.connect(lambda message: self.show_failure("Cannot load series", message))
        task.failed.connect(self._keep_open_series_annotations)
        self._track(task)
        self.load_task = task
        task.start()

    def _show_volume(self, volume: Volume) -> None:
        self.session.show_volume(volume)
        self.viewer.set_volume(volume)
        self._open_annotations(volume)
        self.stack.setCurrentWidget(self.viewer)
        info = volume.info
        patient = info.identity.patient_name.replace("^", " ").strip() or "(no name)"
        self.setWindowTitle(f"liverview — {patient} — {info.describe()}")
        self._show_open_series_phase()
        self._refresh_timer.start()

    def _refresh_loading_views(self) -> None:
        if self.volume is not None:
            self.viewer.refresh()

    def _on_loaded(self, volume: Volume) -> None:
        self._refresh_timer.stop()
        if volume is not self.volume:
            self._show_volume(volume)
            self._refresh_timer.stop()
        self.viewer.refresh()
        if volume.is_hu:
            # Once the series is read, not when its first slice is shown: importing torch on the model's
            # thread holds the GIL in long stretches, and painting that first slice waited up to 0.25 s
            # behind it (a quarter of the bench_first_slice runs).
            self.classification.preload()
        self._refresh_lesions()
        if self.scan is not None and volume.failed:
            self.scan.skipped.extend(f for f in volume.failed if f not in self.scan.skipped)
            self.browser.set_scan(self.scan)
        if self.scan is not None and self.scan.skipped:
            # A folder (a CD, a PACS export) that brings DICOM SEGs for this series: offer them.
            self.offer_segs([Path(skipped.path) for skipped in self.scan.skipped])
        n = len(volume.warnings)
        self.warning_button.setText(f"⚠ {n} warning(s)")
        self.warning_button.setVisible(n > 0)
        loaded = f"Loaded {volume.shape[0]} slices"
        if self._recovery_note:
            loaded, self._recovery_note = f"{loaded} · {self._recovery_note}", ""
        self.statusBar().showMessage(loaded, 10000 if "Recovered" in loaded else 5000)

    def open_demo(self) -> None:
        """Open the synthetic demo study, generating it first (once) in the user data folder."""
        from liverview.synth.demo import write_demo_study

        self._open_generated_demo(demo_study_dir(), "demo study", write_demo_study, lambda folder: None)

    def open_multiphase_demo(self) -> None:
        """Open the four-phase demo study (generated once, in about a second) on its portal-venous series,
        where its ground truth is outlined; its other phases are in the study, for the model to read."""
        from liverview.synth.demo import GROUND_TRUTH_NAME, write_multiphase_demo

        def on_its_venous_series(folder: Path) -> None:
            truth = json.loads((folder / GROUND_TRUTH_NAME).read_text(encoding="utf-8"))
            self._open_first = truth.get("series_instance_uid")

        self._open_generated_demo(multiphase_demo_dir(), "four-phase demo study",
                                  lambda scratch, progress, should_stop: write_multiphase_demo(scratch),
                                  on_its_venous_series)

    def _open_generated_demo(self, target: Path, what: str, write, before_open) -> None:
        """Open the demo in `target`, written there first (once, in the background) by `write(folder,
        progress=, should_stop=)` into a scratch folder that replaces `target` only when complete;
        `before_open(target)` runs just before it opens."""
        from liverview.synth.demo import DICOM_DIR_NAME, GROUND_TRUTH_NAME

        def open_it(folder: Path) -> None:
            before_open(folder)
            self.open_paths([str(folder / DICOM_DIR_NAME)])

        if (target / GROUND_TRUTH_NAME).is_file() and (target / DICOM_DIR_NAME).is_dir():
            open_it(target)
            return

        def generate(progress, should_stop, report):
            scratch = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=target.parent))
            try:
                write(scratch, progress=progress, should_stop=should_stop)
                if target.exists():
                    shutil.rmtree(target)
                scratch.rename(target)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return target

        self._cancel_study_tasks()
        self.statusBar().showMessage(f"Generating the {what} (once) …")
        task = BackgroundTask(generate, self, name="demo")
        task.finished.connect(lambda folder: open_it(Path(folder)))
        task.failed.connect(lambda message: self.show_failure(f"Cannot create the {what}", message))
        self._track(task)
        self.demo_task = task
        task.start()

    # -- tasks -----------------------------------------------------------------------------------
    def _track(self, task: BackgroundTask) -> None:
        """The window's own tasks: in the session's registry, with the status bar's progress and Cancel."""
        self.register_task(task)
        self._progress_tasks.add(task)
        task.done.connect(lambda: self._progress_tasks.discard(task))
        task.progress.connect(self._on_progress)
        task.done.connect(self._on_task_done)
        task.cancelled.connect(lambda: self.statusBar().showMessage("Cancelled", 4000))
        self.progress.setValue(0)
        self.progress.setFormat("Starting…")  # not the previous task's last words until this one reports
        self.progress.show()
        self.cancel_button.show()

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(fraction * 1000))
        self.progress.setFormat(message)

    def _on_task_done(self) -> None:
        if not any(task.is_running() for task in self._progress_tasks):
            self.progress.hide()
            self.cancel_button.hide()

    def cancel_tasks(self) -> None:
        """The Cancel button: every running task, exports included."""
        self.session.tasks.cancel_all()

    def _cancel_study_tasks(self) -> None:
        """Another study is being opened: stop reading the old one. Exports finish (they hold copies),
        and so do PACS transfers (a retrieve opens its study while its other series still arrive)."""
        self.session.tasks.cancel_all(keep=lambda task: task.name == "export" or task.name.startswith("pacs"))

    def offer_segs(self, paths: list[Path]) -> None:
        """SEGs among `paths` (a study's files) that reference the open series are offered as lesions."""
        if self.volume is not None:
            self.seg_offers.look(paths, self.volume)

    def register_task(self, task: BackgroundTask) -> None:
        """A task shown elsewhere (a PACS transfer): Cancel and Close reach it all the same."""
        self.session.tasks.add(task)
        task.done.connect(lambda: self.session.tasks.discard(task))

    def show_status(self, text: str, msecs: int = 4000) -> None:
        self.statusBar().showMessage(text, msecs)

    def may_edit(self, lesion) -> bool:
        """True for the reader's own lesion; otherwise the status bar says why not."""
        return self.annotator is not None and self.annotator.is_mine(lesion)

    def show_failure(self, title: str, message: str) -> None:
        self._refresh_timer.stop()
        box = QMessageBox(QMessageBox.Warning, title, message, QMessageBox.Ok, self)
        box.setTextFormat(Qt.PlainText)
        box.show()

    # -- view helpers ----------------------------------------------------------------------------
    def apply_series_window(self) -> None:
        preset = self.viewer.series_window()
        if preset is not None:
            self.viewer.apply_preset(preset)
        else:
            self.statusBar().showMessage("This series has no window in its header", 4000)

    def _show_cursor(self, info: CursorInfo | None) -> None:
        if info is None:
            self.pixel_label.setText("")
            self.value_label.setText("")
            self.position_label.setText("")
            return
        z, y, x = (int(v) for v in info.index)
        lps = info.patient_mm
        self.position_label.setText(f"({lps[0]:.1f}, {lps[1]:.1f}, {lps[2]:.1f}) mm LPS")
        # Column and row count from 0 as in the image; the slice is numbered as the reader pages (from 1).
        self.pixel_label.setText(f"x {x}  y {y}  slice {self.viewer.slice_number(z)}")
        self.value_label.setText(f"{info.value} HU" if info.is_hu else f"{info.value} (not HU)")

    def show_warnings(self) -> None:
        if self.volume is None:
            return
        box = QMessageBox(QMessageBox.Information, "Series warnings",
                          "\n".join(f"• {w}" for w in self.volume.warnings), QMessageBox.Ok, self)
        box.setTextFormat(Qt.PlainText)
        box.exec()

    def show_help(self) -> None:
        box = QMessageBox(QMessageBox.NoIcon, "Mouse and keyboard", HELP_TEXT, QMessageBox.Ok, self)
        box.setTextFormat(Qt.PlainText)
        box.setStyleSheet("QLabel { font-family: monospace; }")
        box.exec()

    def show_about(self) -> None:
        QMessageBox.about(self, "About liverview",
                          f"liverview {__version__}\nResearch and teaching use only — not a medical device.")

    # -- drag and drop ---------------------------------------------------------------------------
    def dragEnterEvent(self, event):  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event):  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.open_paths(paths)
