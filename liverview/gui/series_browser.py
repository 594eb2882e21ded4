"""Study -> series tree with thumbnails, and the list of skipped files with their reasons."""
from __future__ import annotations

import html
from dataclasses import replace

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHeaderView, QLabel, QMenu, QPushButton, QTableWidget,
                               QTableWidgetItem, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from liverview.imaging.contrast_phase import ContrastPhase, PhaseDecision
from liverview.io.series import ScanResult, SeriesInfo
from liverview.io.sources import SkippedFile

THUMB_SIZE = 72


def plain_tooltip(text: str) -> str:
    """Tooltips are rendered as rich text when they look like HTML; escape untrusted DICOM strings."""
    return "<p style='white-space:pre-wrap'>" + html.escape(text) + "</p>"


def grey_to_pixmap(image: np.ndarray) -> QPixmap:
    image = np.ascontiguousarray(image, dtype=np.uint8)
    qimage = QImage(image.data, image.shape[1], image.shape[0], image.strides[0], QImage.Format_Grayscale8)
    return QPixmap.fromImage(qimage.copy())


def series_label(info: SeriesInfo, phase: PhaseDecision | None = None) -> str:
    number = f"#{info.identity.series_number} " if info.identity.series_number is not None else ""
    spacing = f"{info.slice_spacing_mm:.3g} mm" if info.n_images > 1 else "single image"
    flag = "  ⚠" if info.warnings else ""
    images = f"{info.n_images} image" + ("s" if info.n_images != 1 else "")
    # Short lines: the browser is narrow beside its thumbnails, and a cut "512×51…" says nothing.
    text = (f"{number}{info.caption()}{flag}\n"
            f"{images}, {info.plane}\n{info.columns}×{info.rows}, {spacing}")
    # An axial CT series is expected to have a phase: that none could be told is said, not left out.
    if phase is not None and (phase.phase is not ContrastPhase.UNKNOWN
                              or (info.modality == "CT" and info.plane == "axial")):
        text += f"\n{phase_caption(phase)}"
    return text


def phase_caption(decision: PhaseDecision) -> str:
    """"Portal-venous (images)" (`PhaseDecision.caption`; the tooltip says more)."""
    return decision.caption()


class SkippedFilesDialog(QDialog):
    """Every file that did not load, with the reason in plain words."""

    def __init__(self, skipped: list[SkippedFile], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"{len(skipped)} file(s) skipped")
        self.resize(900, 420)
        table = QTableWidget(len(skipped), 2, self)
        table.setHorizontalHeaderLabels(["File", "Reason"])
        for row, item in enumerate(skipped):
            table.setItem(row, 0, QTableWidgetItem(item.path))
            table.setItem(row, 1, QTableWidgetItem(item.reason))
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Interactive)
        table.horizontalHeader().setStretchLastSection(True)
        table.setColumnWidth(0, 380)
        table.setEditTriggers(QTableWidget.NoEditTriggers)
        table.setWordWrap(True)
        self.table = table
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(table)
        layout.addWidget(buttons)


class SeriesBrowser(QWidget):
    """Lists what a scan found; double-click (or Enter) on a series asks to open it."""

    series_activated = Signal(object)  # SeriesInfo
    #: (series key, phase value or "" for liverview's own decision), from the item's context menu.
    phase_correction_requested = Signal(str, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scan: ScanResult | None = None
        self._items: dict[str, QTreeWidgetItem] = {}
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setIconSize(QSize(THUMB_SIZE, THUMB_SIZE))
        self.tree.setIndentation(12)
        self.tree.itemActivated.connect(self._on_activated)
        self.tree.setContextMenuPolicy(Qt.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._show_context_menu)
        self.skipped_button = QPushButton()
        self.skipped_button.setFlat(True)
        self.skipped_button.setStyleSheet("text-align: left; color: #f0b040;")
        self.skipped_button.clicked.connect(self.show_skipped)
        self.skipped_button.hide()
        self.reading_label = QLabel()
        self.reading_label.setTextFormat(Qt.PlainText)
        self.reading_label.hide()
        self.empty_label = QLabel("No study open.\nFile → Open folder… or drop a folder here.")
        self.empty_label.setAlignment(Qt.AlignCenter)
        self.empty_label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.empty_label)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.reading_label)
        layout.addWidget(self.skipped_button)
        self.tree.hide()

    def set_scan(self, scan: ScanResult) -> None:
        """Show what a scan found; an incomplete scan (still reading) lists its series greyed, with the
        images found so far, and they open once the scan is complete."""
        self.scan = scan
        self.tree.clear()
        self._items.clear()
        studies: dict[str, QTreeWidgetItem] = {}
        for info in scan.series:
            study = studies.get(info.study_uid)
            if study is None:
                patient = info.identity.patient_name.replace("^", " ").strip() or "(no name)"
                study = QTreeWidgetItem([f"{patient}  {info.identity.patient_id}\n{info.identity.study_date}  {info.identity.study_description}".strip()])
                study.setFlags(Qt.ItemIsEnabled)
                studies[info.study_uid] = study
                self.tree.addTopLevelItem(study)
            # A series still being read has gaps that are not real: its warnings wait for the whole scan.
            item = QTreeWidgetItem([series_label(info if scan.complete else replace(info, warnings=[]))])
            item.setData(0, Qt.UserRole, info.key)
            if not scan.complete:
                item.setFlags(Qt.NoItemFlags)
            tip = f"Series {info.series_uid}\n" + "\n".join(f"• {w}" for w in info.warnings)
            item.setToolTip(0, plain_tooltip(tip))
            study.addChild(item)
            self._items[info.key] = item
        self.tree.expandAll()
        n = len(scan.skipped)
        self.skipped_button.setText(f"{n} file(s) skipped — click for reasons")
        self.skipped_button.setVisible(n > 0)
        self.reading_label.setText(f"Reading… {sum(s.n_images for s in scan.series):,} image(s) so far")
        self.reading_label.setVisible(not scan.complete)
        self.tree.setVisible(bool(scan.series))
        self.empty_label.setVisible(not scan.series)
        if not scan.series:
            self.empty_label.setText("No loadable images found." if scan.complete else "Reading…")

    def set_phases(self, phases: dict[str, PhaseDecision]) -> None:
        """Each series' contrast phase on its third line; how it was decided in its tooltip."""
        for info in self.scan.series if self.scan is not None else []:
            item, decision = self._items.get(info.key), phases.get(info.key)
            if item is None or decision is None:
                continue
            item.setText(0, series_label(info, decision))
            tip = (f"Series {info.series_uid}\nContrast phase: {decision.phase.words} — {decision.summary}\n"
                   + "\n".join(f"• {w}" for w in info.warnings))
            item.setToolTip(0, plain_tooltip(tip))

    def set_thumbnail(self, key: str, image: np.ndarray) -> None:
        item = self._items.get(key)
        if item is not None:
            item.setIcon(0, QIcon(grey_to_pixmap(image)))

    def select(self, key: str) -> None:
        item = self._items.get(key)
        if item is not None:
            self.tree.setCurrentItem(item)

    def show_skipped(self) -> None:
        if self.scan is not None:
            SkippedFilesDialog(self.scan.skipped, self).exec()

    def phase_menu(self, key: str) -> QMenu:
        """"Contrast phase" choices for one series: each phase, and back to liverview's own decision."""
        menu = QMenu("Contrast phase", self)
        for phase in (ContrastPhase.NON_CONTRAST, ContrastPhase.ARTERIAL, ContrastPhase.PORTAL_VENOUS,
                      ContrastPhase.DELAYED):
            action = menu.addAction(f"Set phase: {phase.words}")
            action.triggered.connect(lambda _=False, p=phase.value: self.phase_correction_requested.emit(key, p))
        menu.addSeparator()
        reset = menu.addAction("Phase as liverview decided")
        reset.triggered.connect(lambda _=False: self.phase_correction_requested.emit(key, ""))
        return menu

    def _show_context_menu(self, pos) -> None:
        item = self.tree.itemAt(pos)
        key = item.data(0, Qt.UserRole) if item is not None else None
        if key:
            self.phase_menu(key).exec(self.tree.viewport().mapToGlobal(pos))

    def _on_activated(self, item: QTreeWidgetItem, _column: int) -> None:
        key = item.data(0, Qt.UserRole)
        if key and self.scan is not None and self.scan.complete:
            self.series_activated.emit(self.scan.find(key))
