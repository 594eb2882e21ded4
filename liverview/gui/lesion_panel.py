"""The lesion panel: label list, the selected lesion's confidence and note, readers, lesion table."""
from __future__ import annotations

import math

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QColorDialog, QComboBox, QDialog, QDialogButtonBox, QFormLayout,
                               QHBoxLayout, QHeaderView, QLabel, QLineEdit, QListWidget, QListWidgetItem, QMenu,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from liverview.annotations.document import AIResult, Lesion
from liverview.annotations.labels import CodedConcept, Confidence, LabelDef, LabelTaxonomy
from liverview.annotations.measurements import LesionMeasurement, format_measurement, measure_lesion
from liverview.model.uncertainty import format_percent
from liverview.io.volume import Volume

COLUMNS = ("Lesion", "Label", "Long", "Short", "Area", "Volume mL", "Mean", "SD", "Min", "Max",
           "Slices", "Confidence", "Reader", "Model")
#: The units of the short headers, shown as their tooltips.
UNITS = {"Long": "longest diameter, mm (RECIST)", "Short": "perpendicular diameter, mm", "Area": "largest outline, mm²",
         "Mean": "mean value (HU for CT)", "SD": "standard deviation", "Min": "minimum", "Max": "maximum"}
#: Shown at first; the others are a right-click on the header away, and the selected lesion's
#: details pane lists them all (the table fits the panel without scrolling sideways).
DEFAULT_COLUMNS = ("Lesion", "Label", "Long", "Short", "Area", "Mean", "Model")
#: Columns of free-length words, fitted to the panel rather than to their text.
TEXT_COLUMNS = ("Label", "Model")
#: The Reader column is fitted to its names up to this width (elided beyond, the whole name in the tooltip).
READER_COLUMN_MAX_PX = 90


def describe_answer(answer: AIResult, taxonomy: LabelTaxonomy) -> str:
    """The model's answer in a table cell, as the Model panel heads it: no class for an answer that is
    no suggestion (outside the training data, or no class ahead of the next)."""
    if answer.outside_training:
        return "outside training data"
    if answer.refusal() is not None:
        return "no class leads"
    return f"{taxonomy.name_of(answer.predicted)} {format_percent(answer.probability)}"


def swatch(color: tuple[int, int, int]) -> QIcon:
    pixmap = QPixmap(14, 14)
    pixmap.fill(QColor(*color))
    return QIcon(pixmap)


#: Where a cell keeps the number it sorts by (Qt.UserRole holds the lesion id in the first column).
SORT_ROLE = Qt.UserRole + 1


class _NumberItem(QTableWidgetItem):
    """Sorts by value, not by text."""

    def __init__(self, value: float, text: str) -> None:
        super().__init__(text)
        self.setData(SORT_ROLE, value)
        self.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return (math.isnan(a), a) < (math.isnan(b), b)
        return super().__lt__(other)


class _NoteEdit(QLineEdit):
    """A line edit in the main window that keeps Return and Enter: the window's "Close polygon" shortcut
    took them, so a note confirmed with Enter stayed unsaved until the field lost focus."""

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.ShortcutOverride and event.key() in (Qt.Key_Return, Qt.Key_Enter):
            event.accept()
            return True
        return super().event(event)


class AddLabelDialog(QDialog):
    """A site's own label (e.g. FNH, abscess); a SNOMED CT code only if the user knows it."""

    def __init__(self, taxonomy: LabelTaxonomy, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add label")
        self.taxonomy = taxonomy
        self.name = QLineEdit()
        self.identifier = QLineEdit()
        self.code = QLineEdit()
        self.code.setPlaceholderText("optional, e.g. 44132006")
        self.meaning = QLineEdit()
        self.color = QColor(200, 120, 255)
        self.color_button = QPushButton()
        self.color_button.setIcon(swatch((200, 120, 255)))
        self.color_button.clicked.connect(self._pick_color)
        self.name.textChanged.connect(lambda t: self.identifier.setText(
            "".join(c if c.isalnum() else "_" for c in t.lower()).strip("_")[:40]))
        form = QFormLayout(self)
        form.addRow("Name", self.name)
        form.addRow("Identifier", self.identifier)
        form.addRow("Colour", self.color_button)
        form.addRow("SNOMED CT code", self.code)
        form.addRow("Code meaning", self.meaning)
        self.error = QLabel()
        self.error.setStyleSheet("color: #f06060;")
        form.addRow(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.result_label: LabelDef | None = None

    def _pick_color(self) -> None:
        color = QColorDialog.getColor(self.color, self)
        if color.isValid():
            self.color = color
            self.color_button.setIcon(swatch((color.red(), color.green(), color.blue())))

    def _accept(self) -> None:
        code = None
        if self.code.text().strip():
            if not self.code.text().strip().isdigit():
                self.error.setText("A SNOMED CT code is a number")
                return
            code = CodedConcept(self.code.text().strip(), "SCT", self.meaning.text().strip() or self.name.text().strip())
        try:
            self.result_label = self.taxonomy.add(LabelDef(self.identifier.text().strip(), self.name.text().strip(),
                                                           (self.color.red(), self.color.green(), self.color.blue()), code))
        except ValueError as exc:
            self.error.setText(str(exc))
            return
        self.accept()


class LesionPanel(QWidget):
    label_chosen = Signal(str)
    confidence_chosen = Signal(str)
    note_edited = Signal(str)
    lesion_clicked = Signal(str)
    readers_visibility = Signal(object)  # set of hidden readers
    add_label_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.taxonomy = LabelTaxonomy()
        self.measurements: dict[str, LesionMeasurement] = {}
        self.numbers: dict[str, str] = {}
        #: Columns whose visibility the reader chose (the header menu); the panel leaves them as chosen.
        self.columns_chosen: set[str] = set()
        self.unit = "HU"
        self._measure_cache: dict[tuple[str, int], LesionMeasurement] = {}
        self._measured_state: tuple[int, int] | None = None
        self.labels = QListWidget()
        self.labels.setMaximumHeight(150)
        self.labels.itemClicked.connect(lambda item: self.label_chosen.emit(item.data(Qt.UserRole)))
        add_label = QPushButton("Add label…")
        add_label.clicked.connect(self.add_label_requested)
        self.confidence = QComboBox()
        self.confidence.addItems([c.value for c in Confidence])
        self.confidence.setCurrentText(Confidence.PROBABLE.value)
        self.confidence.activated.connect(lambda _i: self.confidence_chosen.emit(self.confidence.currentText()))
        self.note = _NoteEdit()
        self.note.setPlaceholderText("note for the selected lesion")
        self.note.editingFinished.connect(lambda: self.note_edited.emit(self.note.text()))
        # Until a lesion is selected (`show_selection`): on the welcome screen they would look like a choice.
        self.confidence.setEnabled(False)
        self.note.setEnabled(False)
        self.selected_label = QLabel("No lesion selected")
        self.selected_label.setTextFormat(Qt.PlainText)
        self.selected_label.setWordWrap(True)
        self.readers = QListWidget()
        self.readers.setMaximumHeight(70)
        self.readers.itemChanged.connect(self._readers_changed)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.verticalHeader().hide()
        # Columns are fitted once per refresh: ResizeToContents would re-measure every column on each
        # setItem, which made a 20-lesion refresh take hundreds of milliseconds.
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Interactive)
        self.table.cellClicked.connect(lambda row, _c: self.lesion_clicked.emit(self.table.item(row, 0).data(Qt.UserRole)))
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        header = self.table.horizontalHeader()
        header.setContextMenuPolicy(Qt.CustomContextMenu)
        header.customContextMenuRequested.connect(self._choose_columns)
        for column, name in enumerate(COLUMNS):
            self.table.setColumnHidden(column, name not in DEFAULT_COLUMNS)
            if name in UNITS:
                self.table.horizontalHeaderItem(column).setToolTip(UNITS[name])
        # The two word columns share what the numbers leave (elided, the whole text in the tooltip): a
        # model's answer ("Hepatocellular carcinoma (HCC) 97%") would otherwise push the last columns
        # out of the panel, which does not scroll sideways.
        for name in TEXT_COLUMNS:
            header.setSectionResizeMode(COLUMNS.index(name), QHeaderView.Stretch)
        header.setSortIndicator(0, Qt.AscendingOrder)
        self.details = QLabel("")
        self.details.setTextFormat(Qt.PlainText)
        self.details.setWordWrap(True)
        self.details.setStyleSheet("color: #b8b8b8;")

        details = QHBoxLayout()
        details.addWidget(QLabel("Confidence"))
        details.addWidget(self.confidence)
        details.addWidget(self.note, 1)
        self.setMinimumWidth(300)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(QLabel("Labels (Ctrl+1…9 applies to the selected lesion)"))
        layout.addWidget(self.labels)
        layout.addWidget(add_label)
        layout.addWidget(self.selected_label)
        layout.addWidget(self.details)
        layout.addLayout(details)
        layout.addWidget(QLabel("Readers shown"))
        layout.addWidget(self.readers)
        layout.addWidget(QLabel("Lesions (click a row to jump to it)"))
        layout.addWidget(self.table, 1)

    def set_taxonomy(self, taxonomy: LabelTaxonomy) -> None:
        self.taxonomy = taxonomy
        self.labels.clear()
        for label in taxonomy:
            item = QListWidgetItem(swatch(label.color), f"{label.shortcut:8s} {label.name}")
            item.setData(Qt.UserRole, label.id)
            code = f"SNOMED CT {label.code.value} ({label.code.meaning})" if label.code else "no SNOMED CT code"
            item.setToolTip(f"{label.id}: {code}")
            self.labels.addItem(item)

    def show_lesions(self, lesions: list[Lesion], all_readers: list[str], hidden: set[str], volume: Volume,
                     numbers: dict[str, str] | None = None) -> None:
        """The table of `lesions`, named by `numbers` (L1, L2, …; default their ids)."""
        self.numbers = numbers or {lesion.id: lesion.id for lesion in lesions}
        self.unit = "HU" if volume.is_hu else ""
        self.readers.blockSignals(True)
        self.readers.clear()
        for reader in all_readers:
            item = QListWidgetItem(reader)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Unchecked if reader in hidden else Qt.Checked)
            self.readers.addItem(item)
        self.readers.blockSignals(False)
        # Measuring rasterises every outline; a label or model result alone must not pay for that again.
        # HU statistics also change while a series is still loading slices.
        state = (id(volume), int(volume.loaded.sum()))
        if state != self._measured_state:
            self._measure_cache.clear()
            self._measured_state = state
        keys = {lesion.id: lesion.outline_key() for lesion in lesions}
        for lesion in lesions:
            if (lesion.id, keys[lesion.id]) not in self._measure_cache:
                self._measure_cache[(lesion.id, keys[lesion.id])] = measure_lesion(volume, lesion)
        self.measurements = {lesion.id: self._measure_cache[(lesion.id, keys[lesion.id])] for lesion in lesions}
        live = set(keys.items())
        for stale in [key for key in self._measure_cache if key not in live]:
            del self._measure_cache[stale]
        unit = "HU" if volume.is_hu else ""
        self.table.setSortingEnabled(False)
        self.table.setUpdatesEnabled(False)
        self.table.setRowCount(len(lesions))
        for row, lesion in enumerate(lesions):
            m = self.measurements[lesion.id]
            name = self.taxonomy.name_of(lesion.label, "—")
            number = self.numbers.get(lesion.id, lesion.id)
            first = _NumberItem(int(number[1:]) if number[1:].isdigit() else row, number)
            first.setData(Qt.UserRole, lesion.id)
            first.setToolTip(f"lesion id {lesion.id}")
            answer = lesion.current_ai()
            ai = (describe_answer(answer, self.taxonomy) if answer is not None
                  else "outdated" if lesion.ai is not None else "")
            cells = [first, QTableWidgetItem(name + (" (AI)" if lesion.label_source == "ai-accepted" else "")),
                     *(_NumberItem(getattr(m, name), format_measurement(m, name))
                       for name in ("long_axis_mm", "short_axis_mm", "area_mm2", "volume_ml")),
                     _NumberItem(m.mean, f"{format_measurement(m, 'mean')} {unit}".strip()),
                     *(_NumberItem(getattr(m, name), format_measurement(m, name)) for name in ("sd", "min", "max")),
                     _NumberItem(m.n_slices, str(m.n_slices)), QTableWidgetItem(lesion.confidence),
                     QTableWidgetItem(lesion.reader), QTableWidgetItem(ai)]
            for column, item in enumerate(cells):
                if COLUMNS[column] in (*TEXT_COLUMNS, "Reader"):
                    item.setToolTip(item.text())
                self.table.setItem(row, column, item)
        # One finding outlined by two readers is two rows alike but for the reader: show whose each is,
        # unless the reader chose the Reader column's visibility.
        if "Reader" not in self.columns_chosen:
            self.table.setColumnHidden(COLUMNS.index("Reader"), len({lesion.reader for lesion in lesions}) < 2)
        self.table.resizeColumnsToContents()
        header = self.table.horizontalHeader()
        for column, name in enumerate(COLUMNS):  # room for the header's text and its sort arrow too
            wanted = header.fontMetrics().horizontalAdvance(name) + 20
            self.table.setColumnWidth(column, max(self.table.columnWidth(column), wanted))
        reader_column = COLUMNS.index("Reader")
        self.table.setColumnWidth(reader_column, min(self.table.columnWidth(reader_column), READER_COLUMN_MAX_PX))
        self.table.horizontalScrollBar().setValue(0)
        self.table.setUpdatesEnabled(True)
        self.table.setSortingEnabled(True)

    def _set_column_shown(self, column: int, shown: bool) -> None:
        self.table.setColumnHidden(column, not shown)
        self.columns_chosen.add(COLUMNS[column])

    def _choose_columns(self, position) -> None:
        menu = QMenu(self)
        for column, name in enumerate(COLUMNS[1:], start=1):
            action = menu.addAction(name)
            action.setCheckable(True)
            action.setChecked(not self.table.isColumnHidden(column))
            action.toggled.connect(lambda on, c=column: self._set_column_shown(c, on))
        menu.exec(self.table.horizontalHeader().mapToGlobal(position))

    def show_selection(self, lesion: Lesion | None) -> None:
        # A confidence shown with no lesion selected looks like a choice made; it is the next lesion's default.
        self.confidence.setEnabled(lesion is not None)
        self.note.setEnabled(lesion is not None)
        if lesion is None:
            self.selected_label.setText("No lesion selected")
            self.details.setText("")
            self.note.clear()
            self.table.clearSelection()
            return
        name = self.taxonomy.name_of(lesion.label, "unlabelled")
        source = ""
        if lesion.label_source == "ai-accepted" and lesion.ai is not None:
            source = f" (the model's suggestion, accepted by {lesion.ai.accepted_by or lesion.reader})"
        self.selected_label.setText(f"{self.numbers.get(lesion.id, lesion.id)}: {name}{source} — {lesion.reader}")
        self.selected_label.setToolTip(self.selected_label.text())
        m = self.measurements.get(lesion.id)
        self.details.setText("" if m is None else (
            f"Long {format_measurement(m, 'long_axis_mm')} × short {format_measurement(m, 'short_axis_mm')} mm · "
            f"area {format_measurement(m, 'area_mm2')} mm² · volume {format_measurement(m, 'volume_ml')} mL · "
            f"{m.n_slices} slice(s)\nMean {format_measurement(m, 'mean')} {self.unit} (SD {format_measurement(m, 'sd')}, "
            f"{format_measurement(m, 'min')} to {format_measurement(m, 'max')}) · {lesion.confidence}"))
        self.confidence.setCurrentText(lesion.confidence)
        self.note.setText(lesion.note)
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.UserRole) == lesion.id:
                self.table.selectRow(row)
                break

    def _readers_changed(self, _item) -> None:
        hidden = {self.readers.item(i).text() for i in range(self.readers.count())
                  if self.readers.item(i).checkState() != Qt.Checked}
        self.readers_visibility.emit(hidden)
