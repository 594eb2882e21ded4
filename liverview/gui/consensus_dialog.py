"""Consensus view: per lesion, every reader's label, the majority, outline agreement, and the
adjudicated final label with who decided it."""
from __future__ import annotations

import math

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QMessageBox, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from liverview.annotations.consensus import ConsensusSummary, summarize_consensus
from liverview.annotations.labels import LabelTaxonomy
from liverview.annotations.store import AnnotationStore
from liverview.io.volume import Volume


def _fmt(value: float, pattern: str = "{:.2f}") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


class ConsensusDialog(QDialog):
    lesion_requested = Signal(str)

    def __init__(self, store: AnnotationStore, volume: Volume, taxonomy: LabelTaxonomy, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Consensus")
        # Wide enough for two readers' class names in full on a common screen, never wider than it.
        self.resize(min(1400, int(self.screen().availableGeometry().width() * 0.9)), 520)
        self.store, self.volume, self.taxonomy = store, volume, taxonomy
        self.summary_label = QLabel()
        self.summary_label.setTextFormat(Qt.PlainText)
        self.summary_label.setWordWrap(True)
        self.table = QTableWidget()
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.cellDoubleClicked.connect(self._jump)
        self.table.itemSelectionChanged.connect(self._offer_final_label)
        self.final_label = QComboBox()
        self.final_label.addItem("choose…", None)
        for label in taxonomy:
            self.final_label.addItem(label.name, label.id)
        self.note = QLineEdit()
        self.note.setPlaceholderText("reason (optional), e.g. biopsy, follow-up")
        self.adjudicate_button = QPushButton("Set final label for the selected lesion")
        self.adjudicate_button.clicked.connect(self.adjudicate_selected)
        self.final_label.currentIndexChanged.connect(
            lambda _: self.adjudicate_button.setEnabled(self.final_label.currentData() is not None))
        self.adjudicate_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(QLabel("Final label"))
        row.addWidget(self.final_label)
        row.addWidget(self.note, 1)
        row.addWidget(self.adjudicate_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.table, 1)
        layout.addLayout(row)
        layout.addWidget(QLabel("Double-click a row to show the lesion. Adjudication is recorded with your reader name."))
        self.summary: ConsensusSummary | None = None
        self.refresh()

    def _name(self, label_id: str | None) -> str:
        if label_id is None:
            return "—"
        return self.taxonomy.name_of(label_id)

    def refresh(self) -> None:
        summary = summarize_consensus(self.store.document, self.volume)
        self.summary = summary
        method = {"cohen": "Cohen's κ", "fleiss": "Fleiss' κ"}.get(summary.kappa_method, "κ")
        unmatched = ", ".join(f"{reader}: {n}" for reader, n in summary.unmatched_by_reader.items())
        self.summary_label.setText(
            f"Readers: {', '.join(summary.readers) or 'none'}    {method} = {_fmt(summary.kappa)} "
            f"over {summary.n_kappa_items} lesion(s) labelled by every reader    mean Dice {_fmt(summary.mean_dice)}, "
            f"mean IoU {_fmt(summary.mean_iou)}    found by one reader only — {unmatched or 'none'}    "
            f"adjudicated: {summary.n_adjudicated} of {summary.n_groups}")
        readers = summary.readers
        headers = ["Lesions"] + readers + ["Majority", "Agreement", "Dice", "IoU", "Final label", "Decided by"]
        # Class names share what the other columns leave (elided, whole in the tooltip), so that every
        # column, who decided included, shows without scrolling sideways.
        labels = set(range(1, 1 + len(readers))) | {headers.index("Majority"), headers.index("Final label")}
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setRowCount(len(summary.groups))
        numbers = self.store.document.lesion_numbers()
        for r, group in enumerate(summary.groups):
            # The lesions by the numbers the lesion table and the image tags give them (L1, L2, …).
            cells = [", ".join(numbers.get(i, i) for i in group.lesion_ids)] + [self._name(group.labels.get(reader)) if reader in group.labels else "(not outlined)"
                                                      for reader in readers]
            decided = group.adjudication
            cells += [self._name(group.majority_label), _fmt(group.agreement, "{:.0%}"), _fmt(group.mean_dice),
                      _fmt(group.mean_iou), self._name(group.final_label),
                      f"{decided.decided_by} ({decided.time[:10]})" if decided else ""]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c == 0:
                    item.setData(Qt.UserRole, group.lesion_ids)
                if c in labels:
                    item.setToolTip(text)
                self.table.setItem(r, c, item)
        header = self.table.horizontalHeader()
        for c in range(len(headers)):
            header.setSectionResizeMode(c, QHeaderView.Stretch if c in labels else QHeaderView.ResizeToContents)

    def selected_group(self):
        rows = self.table.selectionModel().selectedRows()
        if not rows or self.summary is None:
            return None
        return self.summary.groups[rows[0].row()]

    def _offer_final_label(self) -> None:
        """The final-label box starts from the selected finding's decided label, else its readers' majority:
        left on the list's first class, a click on "Set final label" recorded a label nobody chose."""
        group = self.selected_group()
        if group is None:
            return
        proposal = group.final_label or group.majority_label
        self.final_label.setCurrentIndex(max(0, self.final_label.findData(proposal)) if proposal else 0)

    def adjudicate_selected(self) -> None:
        group = self.selected_group()
        if group is None or self.final_label.currentData() is None:
            return
        chosen, me = self.final_label.currentData(), self.store.reader
        earlier = group.adjudication
        # Asked, not refused: liverview has no roles, and a clinic decides who may adjudicate.
        # Even to the same label: the decision would become this reader's, without the other's note.
        if earlier is not None and earlier.decided_by != me:
            reason = f" (reason: {earlier.note})" if earlier.note else ""
            if not self.confirm("Replace another reader's decision?",
                                f"{earlier.decided_by} decided {self._name(earlier.final_label)} on "
                                f"{earlier.time[:10]}{reason}. Replace that decision with {self._name(chosen)}, "
                                f"recorded as yours ({me})?"):
                return
        elif me in group.labels and len(set(group.labels.values())) > 1:
            if not self.confirm("Decide a finding you outlined?",
                                f"You outlined one of these lesions yourself (your label: "
                                f"{self._name(group.labels[me])}). A final label is usually decided by a reader "
                                f"who did not. Record {self._name(chosen)} as decided by you ({me})?"):
                return
        self.store.adjudicate(group.lesion_ids, chosen, note=self.note.text().strip())
        selected = self.table.currentRow()
        self.refresh()
        self.table.selectRow(selected)

    def confirm(self, title: str, text: str) -> bool:
        """Yes or No, No the default."""
        return QMessageBox.question(self, title, text, QMessageBox.Yes | QMessageBox.No,
                                    QMessageBox.No) == QMessageBox.Yes

    def _jump(self, row: int, _column: int) -> None:
        ids = self.table.item(row, 0).data(Qt.UserRole)
        if ids:
            self.lesion_requested.emit(ids[0])
