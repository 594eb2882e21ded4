"""The PACS in the main window: File → Query PACS… and File → Send to PACS….

The window is used only through :class:`PacsHost`: open a retrieved study like a folder, the open
series and its annotations for Send, and the existing SEG import for segmentations that arrive with
a study. The query dialog lives as long as the window, so a retrieve goes on while it is closed.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from PySide6.QtCore import QObject, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QApplication, QComboBox, QDialog, QDialogButtonBox, QLabel, QMenu, QMessageBox, \
    QVBoxLayout, QWidget

from liverview.annotations.document import AnnotationDocument
from liverview.annotations.export_seg import export_seg
from liverview.annotations.export_sr import export_sr
from liverview.annotations.labels import LabelTaxonomy
from liverview.gui.pacs_nodes import CURRENT_KEY, load_nodes
from liverview.gui.workers import BackgroundTask
from liverview.io.volume import Volume
from liverview.net.cache import DEFAULT_LIMIT_BYTES, RetrieveCache
from liverview.net.node import PacsNode
from liverview.paths import user_data_dir

if TYPE_CHECKING:
    from liverview.gui.pacs_dialog import QueryDialog
    from liverview.net.send import SendResult

CACHE_LIMIT_KEY = "pacs/cache_limit_gb"


@dataclass
class SendSource:
    """What Send to PACS exports: the open series and its annotations, as the reader sees them now."""

    volume: Volume
    document: AnnotationDocument
    taxonomy: LabelTaxonomy
    reader: str | None


def export_and_send(node: PacsNode, source: SendSource, progress, should_stop) -> list[SendResult]:
    """SEG and SR of the open series, not pseudonymised (they join the source study on the hospital's PACS)."""
    from liverview.net.send import send_files  # pynetdicom: imported when used, not when the window opens

    with tempfile.TemporaryDirectory(prefix="liverview-send-") as folder:
        progress(0.1, "Writing the DICOM SEG")
        seg = export_seg(source.volume, source.document, Path(folder) / "seg.dcm", source.taxonomy,
                         pseudonymize=False, reader=source.reader)
        progress(0.3, "Writing the DICOM SR")
        sr = export_sr(source.volume, source.document, Path(folder) / "sr.dcm", source.taxonomy,
                       pseudonymize=False, reader=source.reader)
        return send_files(node, [seg, sr], progress=progress, should_stop=should_stop)


class SendDialog(QDialog):
    """Choose the node; the confirmation names it and says the objects carry the patient's identity."""

    def __init__(self, nodes: list[PacsNode], current: str, n_lesions: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Send to PACS")
        self.nodes = nodes
        self.box = QComboBox()
        for node in nodes:
            self.box.addItem(f"{node.name}  ({node.address})", node.name)
        self.box.setCurrentIndex(max(self.box.findData(current), 0))
        self.text = QLabel()
        self.text.setTextFormat(Qt.PlainText)
        self.text.setWordWrap(True)
        self.box.currentIndexChanged.connect(lambda _i: self._describe(n_lesions))
        self._describe(n_lesions)
        buttons = QDialogButtonBox(QDialogButtonBox.Cancel)
        buttons.addButton("Send", QDialogButtonBox.AcceptRole)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.box)
        layout.addWidget(self.text)
        layout.addWidget(buttons)

    def node(self) -> PacsNode:
        return self.nodes[self.box.currentIndex()]

    def _describe(self, n_lesions: int) -> None:
        node = self.node()
        self.text.setText(
            f"Send a DICOM SEG and a DICOM SR with {n_lesions} lesion(s) to {node.name} ({node.address})?\n\n"
            "They become part of the same study as the images, with the patient's name and ID: they stay in the "
            "hospital, so they are not pseudonymised.")


class PacsHost(Protocol):
    """What the PACS needs from the main window."""

    settings: QSettings
    volume: Volume | None  # the open series (None while nothing is shown)

    def open_paths(self, paths: list[str]) -> None: ...

    def pacs_send_source(self) -> SendSource | None: ...

    def import_seg(self, path: Path) -> int: ...

    def register_task(self, task: BackgroundTask) -> None: ...

    def offer_segs(self, paths: list[Path]) -> None: ...

    def refresh_study(self, paths: list[str]) -> None: ...


#: How long a retrieved study's SEGs wait for the window to finish loading the series they annotate.
SEG_OFFER_WAIT_MS = 60_000
SEG_OFFER_POLL_MS = 250


class PacsController(QObject):
    def __init__(self, window: QWidget, host: PacsHost) -> None:
        super().__init__(window)
        self.window = window
        self.host = host
        self.settings = host.settings
        self.dialog: QueryDialog | None = None
        self.send_task: BackgroundTask | None = None
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.cancel)

    def add_actions(self, file_menu: QMenu) -> None:
        """Query PACS… (Ctrl+Shift+Q) and Send to PACS…, after the menu's first group (the Open actions)."""
        before = next((a for a in file_menu.actions() if a.isSeparator()), None)
        query = QAction("Query &PACS…", self.window)
        query.setShortcut(QKeySequence("Ctrl+Shift+Q"))
        query.triggered.connect(lambda _checked=False: self.show_query())
        send = QAction("Send to PACS…", self.window)
        send.triggered.connect(lambda _checked=False: self.choose_send())
        for action in (query, send):
            file_menu.insertAction(before, action)
        self.query_action, self.send_action = query, send

    def cache(self) -> RetrieveCache:
        limit_gb = float(self.settings.value(CACHE_LIMIT_KEY, DEFAULT_LIMIT_BYTES / 2**30))
        return RetrieveCache(user_data_dir() / "pacs-cache", limit_bytes=int(limit_gb * 2**30))

    def show_query(self) -> QueryDialog:
        if self.dialog is None:
            from liverview.gui.pacs_dialog import QueryDialog  # pynetdicom: imported when used

            self.dialog = QueryDialog(self.settings, self.cache(), self.host.open_paths, self.window,
                                      register_task=self.host.register_task)
            # The study opened with its first complete series; the rest have arrived since.
            self.dialog.study_retrieved.connect(lambda folder: self.host.refresh_study([folder]))
            self.dialog.study_retrieved.connect(self.offer_segs)
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog

    def cancel(self) -> None:
        if self.dialog is not None:
            self.dialog.cancel()
        if self.send_task is not None and self.send_task.is_running():
            self.send_task.cancel()

    def _message(self, icon, title: str, text: str) -> QMessageBox:
        box = QMessageBox(icon, title, text, QMessageBox.Ok, self.window)
        box.setTextFormat(Qt.PlainText)
        box.show()
        return box

    def choose_send(self) -> BackgroundTask | None:
        source = self.host.pacs_send_source()
        if source is None or not source.document.lesions:
            self._message(QMessageBox.Information, "Send to PACS", "Open a series and outline a lesion first.")
            return None
        nodes = load_nodes(self.settings)
        if not nodes:
            self._message(QMessageBox.Information, "Send to PACS", "Add a PACS node first (File → Query PACS…, Add…).")
            return None
        dialog = SendDialog(nodes, str(self.settings.value(CURRENT_KEY, "")), len(source.document.lesions), self.window)
        if not dialog.exec():
            return None
        return self.send(dialog.node(), source)

    def send(self, node: PacsNode, source: SendSource) -> BackgroundTask:
        task = BackgroundTask(lambda progress, should_stop, report: export_and_send(node, source, progress, should_stop),
                              self, name="pacs-send")
        self.host.register_task(task)
        task.finished.connect(lambda results: self._message(
            QMessageBox.Information if all(r.accepted for r in results) else QMessageBox.Warning,
            "Send to PACS", "\n".join(r.message for r in results)))
        task.failed.connect(lambda message: self._message(QMessageBox.Warning, "Send to PACS failed",
                                                          message))
        self.send_task = task
        task.start()
        return task

    def offer_segs(self, study_dir: str, waited_ms: int = 0) -> None:
        """Once the window shows a series of the retrieved study (complete by now, SEGs and SRs
        included), offer the SEGs that came with it and reference that series."""
        volume = self.host.volume
        if volume is None or not Path(volume.info.files[0]).is_relative_to(study_dir) or not volume.loaded.all():
            if waited_ms < SEG_OFFER_WAIT_MS:
                QTimer.singleShot(SEG_OFFER_POLL_MS, lambda: self.offer_segs(study_dir, waited_ms + SEG_OFFER_POLL_MS))
            return
        self.host.offer_segs(sorted(Path(study_dir).rglob("*.dcm")))
