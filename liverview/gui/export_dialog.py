"""Export… and the import of DICOM SEG files, over `liverview.annotations.export`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLabel, QLineEdit, QPushButton, QWidget)

from liverview.annotations.export import EXPORT_FORMATS, WITH_IMAGES_FORMATS
from liverview.annotations.export_selection import ExportReaders, ReaderScope


@dataclass(frozen=True)
class ExportChoice:
    fmt: str
    folder: Path
    pseudonymize: bool
    labelled_only: bool
    readers: ExportReaders
    with_images: bool


class ExportDialog(QDialog):
    """Format, whose lesions (consensus, one reader, every reader), destination folder, and
    de-identification (on unless explicitly switched off)."""

    def __init__(self, start_folder: str, fmt: str = "seg", parent: QWidget | None = None,
                 readers: list[str] | None = None, default: ExportReaders | None = None,
                 n_adjudicated: int = 0) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export annotations")
        self.format = QComboBox()
        for key, text in EXPORT_FORMATS.items():
            self.format.addItem(text, key)
        self.format.setCurrentIndex(self.format.findData(fmt))
        self.reader_count = len(readers or [])
        self.readers = QComboBox()
        self.readers.addItem(f"Consensus: one lesion per finding, final labels ({n_adjudicated} adjudicated)",
                             ExportReaders(ReaderScope.CONSENSUS))
        for reader in readers or []:
            self.readers.addItem(f"Reader {reader} only", ExportReaders(ReaderScope.READER, reader))
        self.readers.addItem("Every reader's lesions, each naming its reader", ExportReaders(ReaderScope.ALL_READERS))
        if default is not None:
            self.readers.setCurrentIndex(self._index_of(default))
        self.folder = QLineEdit(start_folder)
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._browse)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder, 1)
        folder_row.addWidget(browse)
        self.pseudonymize = QCheckBox("Pseudonymize: no patient name, ID, birth date or other identifiers")
        self.pseudonymize.setChecked(True)
        self.warning = QLabel("The export will contain the patient's identity.")
        self.warning.setStyleSheet("color: #f0b040;")
        self.warning.setVisible(False)
        self.pseudonymize.toggled.connect(lambda on: self.warning.setVisible(not on))
        self.with_images = QCheckBox("With the images, de-identified alike (DICOM SEG / SR): one consistent study")
        self.with_images.setToolTip("A pseudonymised SEG or SR refers to the images by pseudonymised UIDs; these "
                                    "copies of the images carry the same UIDs")
        # Ticked: without them a pseudonymised SEG opens in no other DICOM tool (its references resolve nowhere).
        self.with_images.setChecked(True)
        self.labelled_only = QCheckBox("Only lesions with a label (training dataset)")
        self.labelled_only.setChecked(True)
        self.format.currentIndexChanged.connect(self._offer_options)
        self.pseudonymize.toggled.connect(self._offer_options)
        self._offer_options()
        form = QFormLayout(self)
        form.addRow("Format", self.format)
        form.addRow("Lesions", self.readers)
        form.addRow("Folder", folder_row)
        form.addRow(self.pseudonymize)
        form.addRow(self.warning)
        form.addRow(self.with_images)
        form.addRow(self.labelled_only)
        note = QLabel("Nothing is ever written into the study's own DICOM folder.")
        note.setTextFormat(Qt.PlainText)
        form.addRow(note)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.button(QDialogButtonBox.Ok).setText("Export")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _offer_options(self, *_) -> None:
        """Only the options the chosen format uses can be ticked: the de-identified images go with a
        pseudonymised SEG or SR, the labelled-only choice with the training dataset."""
        fmt = self.format.currentData()
        self.with_images.setEnabled(self.pseudonymize.isChecked() and fmt in WITH_IMAGES_FORMATS)
        self.labelled_only.setEnabled(fmt == "dataset")
        # A training dataset takes each lesion once, with one label: several readers' lesions go as their consensus.
        if fmt == "dataset" and self.reader_count > 1 and self.readers.currentData().scope is ReaderScope.ALL_READERS:
            self.readers.setCurrentIndex(self._index_of(ExportReaders(ReaderScope.CONSENSUS)))

    def _index_of(self, choice: ExportReaders) -> int:
        # QComboBox.findData cannot match Python objects (it found nothing, so the dialog always opened on
        # the consensus, "0 adjudicated" included): compare the items' data here.
        return next((i for i in range(self.readers.count()) if self.readers.itemData(i) == choice), 0)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to folder", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def choice(self) -> ExportChoice:
        return ExportChoice(self.format.currentData(), Path(self.folder.text()), self.pseudonymize.isChecked(),
                            self.labelled_only.isChecked(), self.readers.currentData(),
                            self.pseudonymize.isChecked() and self.with_images.isChecked())
