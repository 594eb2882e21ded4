"""PACS nodes kept in the settings, and the dialog that edits one (with "Verify", a C-ECHO in words)."""
from __future__ import annotations

import json
import logging

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLabel, QLineEdit, QPushButton, QSpinBox, QWidget)

from liverview.gui.workers import BackgroundTask
from liverview.net.node import DEFAULT_CALLING_AE, PacsNode, RetrieveMethod, TlsSettings

log = logging.getLogger(__name__)

NODES_KEY = "pacs/nodes"
CURRENT_KEY = "pacs/current"


def load_nodes(settings: QSettings) -> list[PacsNode]:
    """The configured nodes; an entry that no longer parses is dropped (and logged without its content)."""
    try:
        entries = json.loads(str(settings.value(NODES_KEY, "[]") or "[]"))
    except ValueError:
        log.warning("the PACS node settings are not valid JSON; starting without nodes")
        return []
    nodes = []
    for entry in entries:
        try:
            nodes.append(PacsNode.from_dict(entry))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("a PACS node in the settings was dropped: %s", type(exc).__name__)
    return nodes


def save_nodes(settings: QSettings, nodes: list[PacsNode]) -> None:
    settings.setValue(NODES_KEY, json.dumps([n.to_dict() for n in nodes]))


class FileField(QWidget):
    """A path with a Choose… button."""

    def __init__(self, text: str, caption: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = QLineEdit(text)
        button = QPushButton("Choose…")
        button.clicked.connect(lambda: self._choose(caption))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(button)

    def _choose(self, caption: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, caption, self.edit.text())
        if path:
            self.edit.setText(path)

    def text(self) -> str:
        return self.edit.text().strip()


class NodeDialog(QDialog):
    """Name, PACS AE title, host, port, liverview's AE title, retrieve method, TLS; Verify runs C-ECHO."""

    def __init__(self, node: PacsNode | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("PACS node")
        node = node or PacsNode("PACS", "localhost", 104)
        self.name = QLineEdit(node.name)
        self.called_ae = QLineEdit(node.called_ae)
        self.host = QLineEdit(node.host)
        self.port = QSpinBox(maximum=65535, minimum=1, value=node.port)
        self.calling_ae = QLineEdit(node.calling_ae or DEFAULT_CALLING_AE)
        self.method = QComboBox()
        self.method.addItem("C-GET (nothing to configure on the PACS)", RetrieveMethod.GET.value)
        self.method.addItem("C-MOVE (the PACS must know liverview's AE title and port)", RetrieveMethod.MOVE.value)
        self.method.setCurrentIndex(self.method.findData(node.retrieve_method.value))
        self.move_port = QSpinBox(maximum=65535, minimum=1, value=node.move_port)
        self.tls = QCheckBox("Use TLS")
        self.tls.setChecked(node.tls is not None)
        tls = node.tls or TlsSettings("")
        self.ca_file = FileField(tls.ca_file, "Certificate of the authority that signed the PACS's certificate")
        self.cert_file = FileField(tls.cert_file, "liverview's certificate (if the PACS asks for one)")
        self.key_file = FileField(tls.key_file, "liverview's private key")
        self.answer = QLabel("")
        self.answer.setTextFormat(Qt.PlainText)
        self.answer.setWordWrap(True)
        self.verify_button = QPushButton("Verify")
        self.verify_button.clicked.connect(self.verify)
        self.task: BackgroundTask | None = None

        form = QFormLayout(self)
        form.addRow("Name", self.name)
        form.addRow("PACS AE title", self.called_ae)
        form.addRow("Host", self.host)
        form.addRow("Port", self.port)
        form.addRow("liverview's AE title", self.calling_ae)
        form.addRow("Retrieve with", self.method)
        form.addRow("C-MOVE: liverview listens on port", self.move_port)
        form.addRow(self.tls)
        form.addRow("TLS: CA certificate", self.ca_file)
        form.addRow("TLS: own certificate", self.cert_file)
        form.addRow("TLS: own key", self.key_file)
        verify_row = QHBoxLayout()
        verify_row.addWidget(self.verify_button)
        verify_row.addWidget(self.answer, 1)
        form.addRow(verify_row)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self._accept_if_valid)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def node(self) -> PacsNode:
        """The node as entered; raises ValueError with a sentence when a field is wrong."""
        tls = None
        if self.tls.isChecked():
            if not self.ca_file.text():
                raise ValueError("TLS needs the CA certificate that signed the PACS's certificate.")
            tls = TlsSettings(self.ca_file.text(), self.cert_file.text(), self.key_file.text())
        if not self.name.text().strip() or not self.host.text().strip():
            raise ValueError("Give the node a name and a host.")
        return PacsNode(name=self.name.text().strip(), host=self.host.text().strip(), port=self.port.value(),
                        called_ae=self.called_ae.text().strip(), calling_ae=self.calling_ae.text().strip(),
                        retrieve_method=RetrieveMethod(self.method.currentData()), move_port=self.move_port.value(),
                        tls=tls)

    def _accept_if_valid(self) -> None:
        try:
            self.node()
        except ValueError as exc:
            self.answer.setText(str(exc))
            return
        self.accept()

    def verify(self) -> BackgroundTask | None:
        try:
            node = self.node()
        except ValueError as exc:
            self.answer.setText(str(exc))
            return None
        from liverview.net.verify import verify_node  # pynetdicom: imported when used

        self.answer.setText(f"Asking {node.address} …")
        self.verify_button.setEnabled(False)
        task = BackgroundTask(lambda progress, should_stop, report: verify_node(node), self)
        task.finished.connect(lambda result: self.answer.setText(result.message))
        task.failed.connect(self.answer.setText)
        task.done.connect(lambda: self.verify_button.setEnabled(True))
        self.task = task
        task.start()
        return task
