"""File → Query PACS… and Send to PACS… against a real Orthanc, with real Qt events (offscreen)."""
from __future__ import annotations

from pathlib import Path

from orthanc_server import closed_port, node_for, start_orthanc
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from liverview.gui.main_window import MainWindow
from liverview.gui.pacs_controller import SendDialog
from liverview.gui.pacs_dialog import COLUMNS
from liverview.gui.pacs_nodes import load_nodes, save_nodes
from liverview.net.query import DatePreset, find_series

ANNOTATIONS = Path(__file__).resolve().parents[1] / "data" / "crlm-ct-1004-metastases.json"


def make_window(qtbot, tmp_path, nodes):
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    settings.setValue("model/preload", False)
    save_nodes(settings, nodes)
    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def search(qtbot, dialog, name: str) -> None:
    dialog.patient_name.setText(name)
    dialog.modality.setCurrentText("any")
    dialog.date.setCurrentIndex(dialog.date.findData(DatePreset.ANY))
    with qtbot.waitSignal(dialog.search().finished, timeout=20000):
        pass


def test_query_retrieve_in_background_and_open_the_study(qtbot, tmp_path, pacs):
    window = make_window(qtbot, tmp_path, [node_for(pacs)])
    assert window.pacs.query_action.shortcut().toString() == "Ctrl+Shift+Q"
    window.pacs.query_action.trigger()
    dialog = window.pacs.dialog
    assert dialog.isVisible() and dialog.node().name == "test PACS"

    search(qtbot, dialog, "CRLM*")
    assert dialog.tree.topLevelItemCount() == 1
    study = dialog.tree.topLevelItem(0)
    assert [study.text(i) for i in range(5)] == ["CRLM-CT-1004", "CRLM-CT-1004", "1994-11-22", "CT",
                                                "CT CH/ABD/PEL W/ CONTRAST"]
    study.setExpanded(True)
    qtbot.waitUntil(lambda: study.childCount() == 1, timeout=20000)
    assert study.child(0).text(COLUMNS.index("Images")) == "41"

    ticks, seen = [], set()
    timer = QTimer()
    timer.timeout.connect(lambda: (ticks.append(1), seen.add(study.child(0).text(COLUMNS.index("Retrieve")))))
    timer.start(5)
    task = dialog.retrieve(study)
    assert task.is_running() and dialog.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: window.volume is not None and window.volume.loaded.all(), timeout=30000)
    qtbot.waitUntil(lambda: not task.is_running(), timeout=10000)
    timer.stop()
    # The event loop kept running while the images arrived: the tree showed the counts as they grew.
    assert any(text.endswith(" of 41") for text in seen) and "complete" in seen and len(ticks) > 3
    assert window.volume.shape == (41, 512, 512)
    assert Path(window.volume.info.files[0]).is_relative_to(dialog.cache.study_dir(study.data(0, 0x0100)))
    assert window.viewer.views[0].slice_index == 20  # middle slice, as for folders
    assert dialog.status.text() == "1 series, 41 images retrieved."


def test_every_series_of_a_retrieved_study_joins_the_browser(qtbot, tmp_path, pacs_export):
    """The study opens with its first complete series while the others still arrive; once the
    retrieve is done the browser lists them all, and the series on screen stays open (not reloaded)."""
    server = start_orthanc(tmp_path / "orthanc")
    try:
        server.upload(sorted(pacs_export.glob("*/*.dcm")))
        window = make_window(qtbot, tmp_path, [node_for(server)])
        window.pacs.query_action.trigger()
        dialog = window.pacs.dialog
        search(qtbot, dialog, "CRLM*")
        task = dialog.retrieve(dialog.tree.topLevelItem(0))
        qtbot.waitUntil(lambda: window.volume is not None and window.volume.loaded.all(), timeout=30000)
        shown = window.volume
        qtbot.waitUntil(lambda: not task.is_running(), timeout=30000)
        qtbot.waitUntil(lambda: window.session.scan is not None and len(window.session.scan.series) == 2,
                        timeout=30000)
        assert len(window.browser._items) == 2 and window.volume is shown
        assert dialog.status.text() == "2 series, 82 images retrieved."
        # The cache size counts the study just retrieved (82 slices of 0.5 MB).
        qtbot.waitUntil(lambda: dialog.cache_label.text().startswith("Cache: ")
                        and int(dialog.cache_label.text().split()[1]) >= 40, timeout=10000)
    finally:
        server.stop(graceful=False)


def test_a_cancelled_retrieve_does_not_leave_a_count_that_reads_as_kept(qtbot, tmp_path, pacs):
    """PACS review: after Cancel the series row kept "4 of 109", as if those images had been kept."""
    window = make_window(qtbot, tmp_path, [node_for(pacs)])
    dialog = window.pacs.show_query()
    search(qtbot, dialog, "CRLM*")
    study = dialog.tree.topLevelItem(0)
    study.setExpanded(True)
    qtbot.waitUntil(lambda: study.childCount() == 1, timeout=20000)
    task = dialog.retrieve(study)
    task.cancel()
    qtbot.waitUntil(lambda: not task.is_running(), timeout=20000)
    column = COLUMNS.index("Retrieve")
    study.child(0).setText(column, "4 of 41")  # where a retrieve stopped part-way (here it may be at 0 or done)
    task.cancelled.emit()
    assert study.child(0).text(column) == "cancelled, not kept"
    study.child(0).setText(column, "complete")
    task.cancelled.emit()
    assert study.child(0).text(column) == "complete"  # a series that was kept stays so


def test_the_beginning_of_a_name_finds_the_patient(qtbot, tmp_path, pacs):
    """Walkthrough 3b: "find today's liver CT by patient name" - a reader types the name's beginning,
    without DICOM's wildcard."""
    window = make_window(qtbot, tmp_path, [node_for(pacs)])
    window.pacs.query_action.trigger()
    dialog = window.pacs.dialog
    search(qtbot, dialog, "crlm")
    assert dialog.tree.topLevelItemCount() == 1 and dialog.query().patient_name == "crlm*"
    search(qtbot, dialog, "CRLM-CT-100?")  # a name with its own wildcard is taken as written
    assert dialog.tree.topLevelItemCount() == 1 and dialog.query().patient_name == "CRLM-CT-100?"


def test_a_second_query_cancels_the_first_and_failures_read_as_sentences(qtbot, tmp_path, pacs):
    window = make_window(qtbot, tmp_path, [node_for(pacs)])
    dialog = window.pacs.show_query()
    dialog.date.setCurrentIndex(dialog.date.findData(DatePreset.ANY))
    dialog.modality.setCurrentText("any")
    first = dialog.search()
    second = dialog.search()
    assert first is not second
    with qtbot.waitSignal(second.finished, timeout=20000):
        pass
    qtbot.waitUntil(lambda: not first.is_running(), timeout=10000)
    assert dialog.tree.topLevelItemCount() == len({dialog.tree.topLevelItem(i).data(0, 0x0100)
                                                   for i in range(dialog.tree.topLevelItemCount())}) == 2

    dialog.nodes = [node_for(pacs, port=closed_port(), name="down")]
    dialog._fill_nodes("down")
    with qtbot.waitSignal(dialog.search().failed, timeout=20000):
        pass
    assert dialog.status.text().startswith("The PACS down (127.0.0.1:") and "cannot be reached" in dialog.status.text()


def test_send_seg_and_sr_to_the_same_study(qtbot, tmp_path, crlm_dir, monkeypatch):
    server = start_orthanc(tmp_path / "orthanc")
    try:
        server.upload(sorted(crlm_dir.glob("*.dcm")))
        node = node_for(server)
        window = make_window(qtbot, tmp_path, [node])
        window.open_paths([str(crlm_dir)])
        qtbot.waitUntil(lambda: window.volume is not None and window.volume.loaded.all() and window.store is not None,
                        timeout=30000)
        window.import_annotations(ANNOTATIONS)
        source = window.pacs_send_source()
        assert len(source.document.lesions) == 1

        confirm = SendDialog(load_nodes(window.settings), "test PACS", 1, window)
        assert "to test PACS (ORTHANC@127.0.0.1:" in confirm.text.text()
        assert "not pseudonymised" in confirm.text.text()

        shown = []
        monkeypatch.setattr(QMessageBox, "show", lambda box: shown.append(box.text()))
        task = window.pacs.send(node, source)
        with qtbot.waitSignal(task.done, timeout=30000):
            pass
        QApplication.processEvents()
        assert shown[-1] == ("SEG “liverview lesions”: stored on test PACS.\n"
                             "SR “liverview lesion measurements”: stored on test PACS.")
        series = find_series(node, window.volume.study_uid)
        assert sorted(s.modality for s in series) == ["CT", "SEG", "SR"]

        # Retrieved again, the study brings the SEG along: it is offered for the series it annotates.
        before = len(window.store.document.lesions)
        dialog = window.pacs.show_query()
        search(qtbot, dialog, "CRLM*")
        dialog.retrieve(dialog.tree.topLevelItem(0))
        qtbot.waitUntil(lambda: window.seg_offers.box is not None, timeout=30000)
        offer = window.seg_offers.box
        study = dialog.tree.topLevelItem(0)  # never expanded: the retrieve listed its series, with their progress
        assert sorted(study.child(i).text(COLUMNS.index("Retrieve")) for i in range(study.childCount())) == \
            ["complete", "complete", "complete"]
        assert offer.text() == ("1 segmentation arrived with this study for the open series — "
                                "show them as lesions?")
        assert Path(window.volume.info.files[0]).is_relative_to(dialog.cache.root)
        offer.button(QMessageBox.Yes).click()
        # The lesion that went out comes back as itself (its id is the segment's Tracking ID): not twice.
        assert len(window.store.document.lesions) == before
        assert window.statusBar().currentMessage().startswith("Imported 0 lesion(s) from a DICOM SEG (1 already shown)")
    finally:
        server.stop(graceful=False)
    QApplication.processEvents()


def test_node_dialog_verifies_in_words_and_refuses_bad_fields(qtbot, pacs):
    from liverview.gui.pacs_nodes import NodeDialog

    dialog = NodeDialog(node_for(pacs))
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.verify().done, timeout=20000):
        pass
    assert dialog.answer.text().startswith("The PACS test PACS (ORTHANC@127.0.0.1:")
    assert "answered the echo" in dialog.answer.text()
    dialog.called_ae.setText("WRONG")
    with qtbot.waitSignal(dialog.verify().done, timeout=20000):
        pass
    assert "does not answer to the AE title 'WRONG'" in dialog.answer.text()
    dialog.called_ae.setText("A\\B")
    assert dialog.verify() is None and "is not valid" in dialog.answer.text()
    dialog.called_ae.setText("ORTHANC")
    dialog.tls.setChecked(True)
    assert dialog.verify() is None and dialog.answer.text() == "TLS needs the CA certificate that signed the PACS's certificate."
