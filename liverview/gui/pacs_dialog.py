"""File → Query PACS…: a query form, the answers as a study → series tree, and background retrieves.

Every network call runs on a `BackgroundTask`; the dialog only starts tasks and applies what they
report. A study opens (through the host's `open_paths`) as soon as its first CT series is complete in
the cache, middle slice first as for folders; the rest of the study keeps arriving.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QFormLayout, QGridLayout, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QMessageBox, QPushButton, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from liverview.gui.pacs_nodes import CURRENT_KEY, NodeDialog, load_nodes, save_nodes
from liverview.gui.workers import BackgroundTask
from liverview.net.cache import RetrieveCache
from liverview.net.node import PacsNode
from liverview.net.query import DatePreset, SeriesMatch, StudyMatch, StudyQuery, date_range_for, find_series, find_studies
from liverview.net.retrieve import SeriesProgress, retrieve_study

COLUMNS = ("Patient / series", "Patient ID", "Date", "Modalities", "Description", "Images", "Accession", "Retrieve")
UID_ROLE = Qt.UserRole
MATCH_ROLE = Qt.UserRole + 1


def _person(name: str) -> str:
    return " ".join(part for part in name.replace("^", " ").split()) or "(no name)"


def _date(text: str) -> str:
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


class SortableItem(QTreeWidgetItem):
    """Sorts the Images column as numbers."""

    def __lt__(self, other: QTreeWidgetItem) -> bool:
        column = self.treeWidget().sortColumn() if self.treeWidget() else 0
        if COLUMNS[column] == "Images":
            return (self.data(column, Qt.UserRole) or 0) < (other.data(column, Qt.UserRole) or 0)
        return self.text(column) < other.text(column)


class QueryDialog(QDialog):
    """Query a PACS node, retrieve studies into `cache`, open them with `open_paths`."""

    study_opened = Signal(str)  # the study folder handed to open_paths
    study_retrieved = Signal(str)  # the study folder, once every chosen series is in the cache

    def __init__(self, settings: QSettings, cache: RetrieveCache, open_paths: Callable[[list[str]], None],
                 parent: QWidget | None = None, today: Callable[[], dt.date] = dt.date.today,
                 register_task: Callable[[BackgroundTask], None] | None = None) -> None:
        super().__init__(parent)
        self._register_task = register_task
        self.setWindowTitle("Query PACS")
        self.settings = settings
        self.cache = cache
        self.open_paths = open_paths
        self.today = today
        self.nodes = load_nodes(settings)
        self.query_task: BackgroundTask | None = None
        self.series_tasks: dict[str, BackgroundTask] = {}
        self.retrieve_task: BackgroundTask | None = None
        self.cache_task: BackgroundTask | None = None
        self.opened_study: str | None = None

        self.node_box = QComboBox()
        self._fill_nodes(str(settings.value(CURRENT_KEY, "")))
        add, edit, remove = QPushButton("Add…"), QPushButton("Edit…"), QPushButton("Remove")
        add.clicked.connect(self.add_node)
        edit.clicked.connect(self.edit_node)
        remove.clicked.connect(self.remove_node)
        node_row = QHBoxLayout()
        node_row.addWidget(self.node_box, 1)
        for button in (add, edit, remove):
            node_row.addWidget(button)

        self.patient_name = QLineEdit(placeholderText="e.g. DOE^J (its beginning; * and ? match anything)")
        self.patient_id = QLineEdit()
        self.accession = QLineEdit()
        self.description = QLineEdit(placeholderText="e.g. *LIVER*")
        self.modality = QComboBox()
        self.modality.addItems(["any", "CT", "MR", "PT", "US"])
        self.modality.setCurrentText("CT")
        self.date = QComboBox()
        for preset in DatePreset:
            self.date.addItem(preset.value, preset)
        self.search_button = QPushButton("Search")
        self.search_button.setDefault(True)
        self.search_button.clicked.connect(self.search)
        form = QGridLayout()
        for row, (label, widget, label2, widget2) in enumerate((
                ("Patient name", self.patient_name, "Patient ID", self.patient_id),
                ("Study date", self.date, "Accession", self.accession),
                ("Modality", self.modality, "Description", self.description))):
            form.addWidget(QLabel(label), row, 0)
            form.addWidget(widget, row, 1)
            form.addWidget(QLabel(label2), row, 2)
            form.addWidget(widget2, row, 3)
        form.addWidget(self.search_button, 2, 4)

        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setSortingEnabled(True)
        self.tree.sortByColumn(2, Qt.DescendingOrder)
        self.tree.setUniformRowHeights(True)
        self.tree.header().setSectionResizeMode(QHeaderView.Interactive)
        self.tree.setColumnWidth(0, 230)
        self.tree.setColumnWidth(4, 220)
        self.tree.itemExpanded.connect(self._load_series)
        self.tree.itemDoubleClicked.connect(lambda item, _column: self.retrieve(item))

        self.status = QLabel("")
        self.status.setTextFormat(Qt.PlainText)
        self.status.setWordWrap(True)
        self.retrieve_button = QPushButton("Retrieve")
        self.retrieve_button.clicked.connect(lambda: self.retrieve(self.tree.currentItem()))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.cache_label = QLabel("")
        clear = QPushButton("Clear cache")
        clear.clicked.connect(self.clear_cache)
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.cache_label)
        bottom.addWidget(clear)
        bottom.addWidget(self.retrieve_button)
        bottom.addWidget(self.cancel_button)

        layout = QVBoxLayout(self)
        top = QFormLayout()
        top.addRow("PACS", node_row)
        layout.addLayout(top)
        layout.addLayout(form)
        layout.addWidget(self.tree, 1)
        layout.addLayout(bottom)
        self.resize(1100, 620)
        self._show_cache_size()

    # -- nodes -------------------------------------------------------------------------------------
    def _fill_nodes(self, current: str) -> None:
        self.node_box.clear()
        for node in self.nodes:
            self.node_box.addItem(f"{node.name}  ({node.address})", node.name)
        index = self.node_box.findData(current)
        self.node_box.setCurrentIndex(max(index, 0))

    def node(self) -> PacsNode | None:
        index = self.node_box.currentIndex()
        return self.nodes[index] if 0 <= index < len(self.nodes) else None

    def _store_nodes(self, current: str) -> None:
        save_nodes(self.settings, self.nodes)
        self.settings.setValue(CURRENT_KEY, current)
        self._fill_nodes(current)

    def add_node(self) -> None:
        dialog = NodeDialog(parent=self)
        if dialog.exec():
            node = dialog.node()
            self.nodes = [n for n in self.nodes if n.name != node.name] + [node]
            self._store_nodes(node.name)

    def edit_node(self) -> None:
        old = self.node()
        if old is None:
            return self.add_node()
        dialog = NodeDialog(old, self)
        if dialog.exec():
            node = dialog.node()
            self.nodes = [node if n is old else n for n in self.nodes]
            self._store_nodes(node.name)

    def remove_node(self) -> None:
        old = self.node()
        if old is not None:
            self.nodes = [n for n in self.nodes if n is not old]
            self._store_nodes(self.nodes[0].name if self.nodes else "")

    # -- query -------------------------------------------------------------------------------------
    def query(self) -> StudyQuery:
        modality = self.modality.currentText()
        name = self.patient_name.text().strip()
        if name and not any(wildcard in name for wildcard in "*?"):
            name += "*"  # DICOM matches a name without a wildcard exactly; a reader types its beginning
        return StudyQuery(patient_name=name, patient_id=self.patient_id.text().strip(),
                          accession_number=self.accession.text().strip(),
                          study_date=date_range_for(self.date.currentData(), self.today()),
                          modality="" if modality == "any" else modality,
                          study_description=self.description.text().strip())

    def search(self) -> BackgroundTask | None:
        """Start a study query; one still running is cancelled (C-CANCEL) first."""
        node = self.node()
        if node is None:
            self.status.setText("Add a PACS node first (Add…).")
            return None
        if self.query_task is not None and self.query_task.is_running():
            self.query_task.cancel()
        for task in self.series_tasks.values():
            task.cancel()
        self.series_tasks = {}
        self.tree.clear()
        query = self.query()
        self.status.setText(f"Searching {node.name} …")
        task = BackgroundTask(lambda progress, should_stop, report: find_studies(node, query, should_stop, report), self)
        task.partial.connect(lambda match, task=task: self._add_study(match) if task is self.query_task else None)
        task.finished.connect(lambda found, task=task: self._searched(found) if task is self.query_task else None)
        task.failed.connect(self.status.setText)
        self.query_task = task
        task.start()
        return task

    def _searched(self, found: list[StudyMatch]) -> None:
        self.status.setText(f"{len(found)} stud{'y' if len(found) == 1 else 'ies'} found. Expand one to see its "
                            "series; double-click or Retrieve to fetch it.")

    def _add_study(self, match: StudyMatch) -> None:
        item = SortableItem([_person(match.patient_name), match.patient_id, _date(match.study_date),
                             "/".join(match.modalities), match.study_description,
                             f"{match.n_instances}" if match.n_instances is not None else "?",
                             match.accession_number, ""])
        item.setData(COLUMNS.index("Images"), Qt.UserRole, match.n_instances or 0)
        item.setData(0, UID_ROLE, match.study_uid)
        item.setData(0, MATCH_ROLE, match)
        item.setChildIndicatorPolicy(QTreeWidgetItem.ShowIndicator)
        self.tree.addTopLevelItem(item)

    def _study_item(self, study_uid: str) -> QTreeWidgetItem | None:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item.data(0, UID_ROLE) == study_uid:
                return item
        return None

    def _load_series(self, item: QTreeWidgetItem) -> BackgroundTask | None:
        study_uid = item.data(0, UID_ROLE)
        if item.parent() is not None or item.childCount() or study_uid in self.series_tasks:
            return self.series_tasks.get(study_uid)
        node = self.node()
        task = BackgroundTask(lambda progress, should_stop, report: find_series(node, study_uid, should_stop), self)
        task.finished.connect(lambda series: self._show_series(study_uid, series))
        task.failed.connect(self.status.setText)
        self.series_tasks[study_uid] = task
        task.start()
        return task

    def _show_series(self, study_uid: str, series: list[SeriesMatch]) -> None:
        item = self._study_item(study_uid)
        if item is None or item.childCount():
            return
        for match in series:
            number = match.series_number if match.series_number is not None else "-"
            child = SortableItem([f"{number}  {match.series_description or '(no description)'}", "", "", match.modality, "",
                                  f"{match.n_instances}" if match.n_instances is not None else "?", "",
                                  "in cache" if self.cache.series_dir(study_uid, match.series_uid) else ""])
            child.setData(COLUMNS.index("Images"), Qt.UserRole, match.n_instances or 0)
            child.setData(0, UID_ROLE, match.series_uid)
            child.setData(0, MATCH_ROLE, match)
            item.addChild(child)

    # -- retrieve ----------------------------------------------------------------------------------
    def retrieve(self, item: QTreeWidgetItem | None) -> BackgroundTask | None:
        """Fetch the study of `item` (or only the series, when a series is chosen) in the background."""
        node = self.node()
        if item is None or node is None:
            self.status.setText("Choose a study (or one of its series) first.")
            return None
        if self.retrieve_task is not None and self.retrieve_task.is_running():
            self.status.setText("A retrieve is running: wait for it or Cancel it first.")
            return None
        study_item = item.parent() or item
        study_uid = study_item.data(0, UID_ROLE)
        only = [item.data(0, MATCH_ROLE)] if item.parent() is not None else None
        cache = self.cache
        self.opened_study = None
        self.status.setText(f"Retrieving from {node.name} …")

        def job(progress, should_stop, report):
            series = only or find_series(node, study_uid, should_stop)
            report(series)  # the tree shows them (and their progress) even when the study was not expanded
            return retrieve_study(node, study_uid, cache, series=series, progress=progress, should_stop=should_stop,
                                  report=report)

        task = BackgroundTask(job, self, name="pacs-retrieve")
        if self._register_task is not None:
            self._register_task(task)  # Close (and the window's Cancel) reach a running retrieve
        task.partial.connect(lambda update: self._on_series_progress(study_uid, update))
        task.progress.connect(lambda _fraction, message: self.status.setText(message))
        task.finished.connect(lambda result: self._retrieved(study_uid, result))
        task.failed.connect(lambda message: (self._retrieve_failed(message), self._mark_unkept(study_uid, "failed")))
        task.cancelled.connect(lambda: (self.status.setText("Retrieve cancelled; incomplete series were not kept."),
                                        self._mark_unkept(study_uid, "cancelled")))
        task.done.connect(self._retrieve_done)
        self.retrieve_task = task
        self.cancel_button.setEnabled(True)
        self.retrieve_button.setEnabled(False)
        task.start()
        return task

    def _series_item(self, study_uid: str, series_uid: str) -> QTreeWidgetItem | None:
        study = self._study_item(study_uid)
        for i in range(study.childCount() if study is not None else 0):
            if study.child(i).data(0, UID_ROLE) == series_uid:
                return study.child(i)
        return None

    def _on_series_progress(self, study_uid: str, update: SeriesProgress | list[SeriesMatch]) -> None:
        if isinstance(update, list):
            self._show_series(study_uid, update)
            return
        item = self._series_item(study_uid, update.series_uid)
        if item is not None:
            total = update.expected if update.expected is not None else "?"
            item.setText(COLUMNS.index("Retrieve"), "complete" if update.path else f"{update.received} of {total}")
        if update.path is not None and self.opened_study is None:
            match = item.data(0, MATCH_ROLE) if item is not None else None
            if match is None or match.modality == "CT":
                self.opened_study = study_uid
                folder = str(self.cache.study_dir(study_uid))
                self.open_paths([folder])
                self.study_opened.emit(folder)

    def _mark_unkept(self, study_uid: str, how: str) -> None:
        """Series rows left at "4 of 109" when a retrieve stopped: those images were not kept."""
        study = self._study_item(study_uid)
        column = COLUMNS.index("Retrieve")
        for i in range(study.childCount() if study is not None else 0):
            text = study.child(i).text(column)
            if text and text != "complete":
                study.child(i).setText(column, f"{how}, not kept")

    def _retrieved(self, study_uid: str, result) -> None:
        self.status.setText(f"{len(result.series)} series, {result.n_images} images retrieved.")
        folder = str(self.cache.study_dir(study_uid))
        if self.opened_study is None and result.series:
            self.opened_study = study_uid
            self.open_paths([folder])
            self.study_opened.emit(folder)
        self.study_retrieved.emit(folder)
        self._show_cache_size()  # the study just added to it

    def _retrieve_failed(self, message: str) -> None:
        self.status.setText(message)
        box = QMessageBox(QMessageBox.Warning, "Retrieve failed", message, QMessageBox.Ok, self)
        box.setTextFormat(Qt.PlainText)
        box.show()

    def _retrieve_done(self) -> None:
        self.cancel_button.setEnabled(False)
        self.retrieve_button.setEnabled(True)
        self._show_cache_size()

    def cancel(self) -> None:
        for task in (self.retrieve_task, self.query_task):
            if task is not None and task.is_running():
                task.cancel()

    # -- cache -------------------------------------------------------------------------------------
    def _show_cache_size(self) -> BackgroundTask:
        """Measure the cache off the GUI thread (a full cache holds tens of thousands of files)."""
        cache = self.cache
        task = BackgroundTask(lambda progress, should_stop, report: cache.size_bytes(), self)
        task.finished.connect(lambda size: self.cache_label.setText(
            f"Cache: {size / 2**20:.0f} MB of {cache.limit_bytes / 2**30:.0f} GB"))
        self.cache_task = task
        task.start()
        return task

    def clear_cache(self) -> BackgroundTask | None:
        if self.retrieve_task is not None and self.retrieve_task.is_running():
            self.status.setText("Wait for the retrieve to finish (or Cancel it) before clearing the cache.")
            return None
        cache = self.cache
        self.status.setText("Clearing the PACS cache …")
        task = BackgroundTask(lambda progress, should_stop, report: cache.clear(), self)
        task.finished.connect(lambda _result: self.status.setText(
            "The PACS cache is empty; studies opened from it will be retrieved again."))
        task.failed.connect(self.status.setText)
        task.done.connect(self._show_cache_size)
        self.cache_task = task
        task.start()
        return task
