"""Drawing, labelling, editing and undo in the real window, with Qt mouse and key events (offscreen)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, QSettings, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from liverview.annotations import AnnotationDocument
from liverview.annotations.measurements import roi_mask
from liverview.gui.annotator import Tool
from liverview.gui.main_window import MainWindow


@pytest.fixture
def window(open_demo_window):
    # These tests are about viewing and drawing, not the model.
    return open_demo_window(model__preload=False)


def viewport(window):
    return window.viewer.views[0].graphics.viewport()


def screen_of_pixel(window, x, y) -> QPoint:
    """Viewport coordinates of image pixel (x = column, y = row) on the axial view."""
    view = window.viewer.views[0]
    scene = view.view_box.mapViewToScene(QPointF(*view.pixel_to_view(x, y)))
    return view.graphics.mapFromScene(scene)


def mouse(widget, kind, pos, button=Qt.NoButton, buttons=Qt.NoButton):
    if kind == QEvent.MouseMove:
        QTest.qWait(20)  # pyqtgraph drops moves closer than ~16 ms, as a real mouse never sends them
    event = QMouseEvent(kind, QPointF(pos), QPointF(widget.mapToGlobal(pos)), button, buttons, Qt.NoModifier)
    QApplication.sendEvent(widget, event)


def drag(widget, start: QPoint, end: QPoint, steps: int = 8):
    mouse(widget, QEvent.MouseButtonPress, start, Qt.LeftButton, Qt.LeftButton)
    for i in range(1, steps + 1):
        mouse(widget, QEvent.MouseMove, start + (end - start) * i / steps, Qt.NoButton, Qt.LeftButton)
    mouse(widget, QEvent.MouseButtonRelease, end, Qt.LeftButton, Qt.NoButton)


def click(widget, pos: QPoint, double: bool = False):
    mouse(widget, QEvent.MouseButtonPress, pos, Qt.LeftButton, Qt.LeftButton)
    mouse(widget, QEvent.MouseButtonRelease, pos, Qt.LeftButton, Qt.NoButton)
    if double:
        mouse(widget, QEvent.MouseButtonDblClick, pos, Qt.LeftButton, Qt.LeftButton)
        mouse(widget, QEvent.MouseButtonRelease, pos, Qt.LeftButton, Qt.NoButton)


def test_ellipse_label_copy_to_next_slice_and_undo(qtbot, window):
    qtbot.keyClick(window, Qt.Key_O)
    assert window.annotator.tool == Tool.ELLIPSE
    z = window.viewer.views[0].slice_index
    drag(viewport(window), screen_of_pixel(window, 90, 100), screen_of_pixel(window, 120, 124))
    lesions = window.store.document.lesions
    assert len(lesions) == 1 and lesions[0].reader == "Dr Ada" and lesions[0].rois[0].slice_index == z
    xs, ys = np.asarray(lesions[0].rois[0].points_xy).T
    assert xs.min() == pytest.approx(90, abs=1) and xs.max() == pytest.approx(120, abs=1)
    assert ys.min() == pytest.approx(100, abs=1) and ys.max() == pytest.approx(124, abs=1)
    qtbot.keyClick(window, Qt.Key_4, Qt.ControlModifier)  # metastasis
    window.lesion_panel.confidence.setCurrentText("probable")
    window.lesion_panel.confidence.activated.emit(1)
    lesion = window.store.document.lesions[0]
    assert lesion.label == "metastasis" and lesion.confidence == "probable"
    table = window.lesion_panel.table
    assert table.rowCount() == 1
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    long_mm = float(table.item(0, headers.index("Long")).text())
    assert long_mm == pytest.approx(30 * window.volume.spacing_mm[2], rel=0.05)
    # Next slice, copy the outline (C), then the lesion spans two slices and has a volume.
    qtbot.keyClick(window, Qt.Key_Down)
    below = window.viewer.views[0].slice_index  # the next slice toward the feet
    assert abs(below - z) == 1 and window.viewer.slice_number(below) == window.viewer.slice_number(z) + 1
    qtbot.keyClick(window, Qt.Key_C)
    lesion = window.store.document.lesions[0]
    assert lesion.slices() == sorted([z, below])
    assert float(table.item(0, headers.index("Slices")).text()) == 2
    volume_ml = table.item(0, headers.index("Volume mL")).text()
    assert float(volume_ml) > 0
    # The copy says what it did, with the volume (a column hidden by default).
    number = window.viewer.slice_number(z)
    assert window.statusBar().currentMessage() == (f"Outline of L1 copied from slice {number} to {number + 1}: "
                                                   f"adjust it. L1 now spans 2 slices, volume {volume_ml} mL")
    # Undo the copy and the label, then redo.
    qtbot.keyClick(window, Qt.Key_Z, Qt.ControlModifier)
    assert window.store.document.lesions[0].slices() == [z]
    qtbot.keyClick(window, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert window.store.document.lesions[0].slices() == sorted([z, below])
    # Autosaved within the delay, in the user data folder, never next to the DICOM files.
    window.store.flush()
    saved = json.loads(window.store.path.read_text())
    assert saved["lesions"][0]["label"] == "metastasis"
    assert "annotations" in window.store.path.parts


def test_polygon_freehand_and_select_move(qtbot, window):
    qtbot.keyClick(window, Qt.Key_P)
    vp = viewport(window)
    for x, y in ((60, 60), (90, 60), (90, 85)):
        click(vp, screen_of_pixel(window, x, y))
    qtbot.keyClick(window, Qt.Key_Return)
    assert len(window.store.document.lesions) == 1
    polygon = window.store.document.lesions[0].rois[0]
    assert len(polygon.points_xy) == 3 and polygon.kind == "polygon"
    qtbot.keyClick(window, Qt.Key_D)
    start = screen_of_pixel(window, 150, 150)
    mouse(vp, QEvent.MouseButtonPress, start, Qt.LeftButton, Qt.LeftButton)
    for x, y in ((170, 150), (175, 165), (165, 180), (150, 175), (145, 160)):
        mouse(vp, QEvent.MouseMove, screen_of_pixel(window, x, y), Qt.NoButton, Qt.LeftButton)
    mouse(vp, QEvent.MouseButtonRelease, screen_of_pixel(window, 146, 152), Qt.LeftButton, Qt.NoButton)
    assert len(window.store.document.lesions) == 2
    # Select the polygon and move it 10 pixels right.
    qtbot.keyClick(window, Qt.Key_V)
    before = np.asarray(window.store.document.lesions[0].rois[0].points_xy)
    drag(vp, screen_of_pixel(window, 82, 70), screen_of_pixel(window, 92, 70))
    after = np.asarray(window.store.document.lesions[0].rois[0].points_xy)
    assert np.allclose(after - before, [10, 0], atol=0.6)
    # Drag one vertex.
    drag(vp, screen_of_pixel(window, *after[1]), screen_of_pixel(window, after[1][0] + 5, after[1][1] - 5))
    moved = np.asarray(window.store.document.lesions[0].rois[0].points_xy)
    assert np.allclose(moved[1], after[1] + [5, -5], atol=0.6) and np.allclose(moved[0], after[0])
    qtbot.keyClick(window, Qt.Key_Delete)
    assert len(window.store.document.lesions) == 1


def test_brush_grows_selected_outline_and_eraser_cuts(qtbot, window):
    qtbot.keyClick(window, Qt.Key_B)
    vp = viewport(window)
    drag(vp, screen_of_pixel(window, 100, 100), screen_of_pixel(window, 110, 100))
    lesion = window.store.document.lesions[0]
    first = roi_mask(window.volume, lesion.rois[0]).sum()
    drag(vp, screen_of_pixel(window, 110, 100), screen_of_pixel(window, 120, 100))
    assert len(window.store.document.lesions) == 1
    grown = roi_mask(window.volume, window.store.document.lesions[0].rois[0]).sum()
    assert grown > first * 1.2
    qtbot.keyClick(window, Qt.Key_E)
    drag(vp, screen_of_pixel(window, 118, 92), screen_of_pixel(window, 118, 108))
    cut = roi_mask(window.volume, window.store.document.lesions[0].rois[0]).sum()
    assert cut < grown


def test_one_click_outline_on_demo_cyst(qtbot, window, demo_study):
    truth = AnnotationDocument.from_dict(json.loads(demo_study.ground_truth_path.read_text()))
    cyst = next(lesion for lesion in truth.lesions if lesion.label == "benign_cyst")
    roi = max(cyst.rois, key=lambda r: roi_mask(window.volume, r).sum())
    window.viewer.set_cursor((roi.slice_index, 0, 0))
    centre = np.asarray(roi.points_xy).mean(axis=0)
    qtbot.keyClick(window, Qt.Key_A)
    click(viewport(window), screen_of_pixel(window, *centre))
    assert len(window.store.document.lesions) == 1
    got = roi_mask(window.volume, window.store.document.lesions[0].rois[0])
    expected = roi_mask(window.volume, roi)
    assert 2 * (got & expected).sum() / (got.sum() + expected.sum()) > 0.7


def test_second_reader_sees_first_and_can_hide(qtbot, window, tmp_path):
    qtbot.keyClick(window, Qt.Key_X)
    drag(viewport(window), screen_of_pixel(window, 80, 80), screen_of_pixel(window, 100, 100))
    window.close()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    settings.setValue("model/preload", False)  # these tests are about viewing and drawing, not the model
    settings.setValue("reader/name", "Dr Bob")
    second = MainWindow(settings)
    qtbot.addWidget(second)
    second.show()
    second.open_paths([str(window.volume.info.frames[0].path).rsplit("/", 1)[0]])
    qtbot.waitUntil(lambda: second.store is not None and second.volume.loaded.all(), timeout=30000)
    assert second.store.reader == "Dr Bob"
    assert [lesion.reader for lesion in second.store.document.lesions] == ["Dr Ada"]
    second.lesion_panel.readers.item(0).setCheckState(Qt.Unchecked)
    assert second.lesion_panel.table.rowCount() == 0
    second.close()


def test_closing_with_annotations_the_disk_refused_asks_first(qtbot, window, monkeypatch, tmp_path):
    """A full disk: the window closed without a word and the changes since the last save were lost."""
    import liverview.annotations.store as store_module

    qtbot.keyClick(window, Qt.Key_X)
    drag(viewport(window), screen_of_pixel(window, 80, 80), screen_of_pixel(window, 100, 100))
    window.store.flush()

    def disk_full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "write_text_atomic", disk_full)
    drag(viewport(window), screen_of_pixel(window, 120, 120), screen_of_pixel(window, 140, 140))
    qtbot.waitUntil(lambda: window.unsaved_label.isVisible(), timeout=5000)
    assert "No space left on device" in window.unsaved_label.text()
    asked: list[str] = []
    monkeypatch.setattr(window, "ask_about_unsaved", lambda error, reason, leaving: asked.append(leaving) or "cancel")
    window.close()
    assert asked == ["close"] and window.isVisible() and window.store is not None  # still open, nothing given up
    # Opening another study asks first too, and Cancel stays on this one (it used to open the other and
    # only then ask, with no way back).
    store, volume = window.store, window.volume
    window.open_paths([str(tmp_path)])
    assert asked == ["close", "open"] and window.store is store and window.volume is volume
    # Given up for an opening that then found nothing: the study on screen stays, and its changes are
    # still said to be unsaved (they were given up silently, and closing later lost them).
    monkeypatch.setattr(window, "ask_about_unsaved", lambda error, reason, leaving: "discard")
    empty = tmp_path / "empty"
    empty.mkdir()
    window.open_paths([str(empty)])
    qtbot.waitUntil(lambda: "stays open" in window.statusBar().currentMessage(), timeout=10000)
    qtbot.waitUntil(lambda: window.unsaved_label.isVisible(), timeout=5000)
    assert window.store is store
    copy = tmp_path / "copy.json"
    own_file = window.store.path

    def full_but_for_the_copy(path, text):  # the copy goes to another disk
        if path == own_file:
            disk_full(path, text)
        path.write_text(text)

    monkeypatch.setattr(store_module, "write_text_atomic", full_but_for_the_copy)
    monkeypatch.setattr(window, "ask_about_unsaved", lambda error, reason, leaving: "copy")
    monkeypatch.setattr(window, "choose_annotation_copy", lambda store: copy)
    window.close()
    assert not window.isVisible()
    assert len(json.loads(copy.read_text())["lesions"]) == 2


def test_consensus_of_two_readers_and_adjudication(qtbot, window):
    qtbot.keyClick(window, Qt.Key_X)
    drag(viewport(window), screen_of_pixel(window, 80, 80), screen_of_pixel(window, 100, 100))
    qtbot.keyClick(window, Qt.Key_4, Qt.ControlModifier)
    window.settings.setValue("reader/name", "Dr Bob")
    window.store.reader = "Dr Bob"
    window.annotator.select(None)
    drag(viewport(window), screen_of_pixel(window, 82, 82), screen_of_pixel(window, 102, 102))
    qtbot.keyClick(window, Qt.Key_3, Qt.ControlModifier)
    assert [(lesion.reader, lesion.label) for lesion in window.store.document.lesions] == [("Dr Ada", "metastasis"), ("Dr Bob", "hcc")]
    window.show_consensus()
    dialog = window.consensus_dialog
    summary = dialog.summary
    assert summary.readers == ["Dr Ada", "Dr Bob"] and summary.kappa_method == "cohen"
    assert len(summary.groups) == 1 and summary.groups[0].is_matched
    assert 0.7 < summary.groups[0].mean_dice < 1.0
    assert dialog.table.item(0, 1).text() == "Metastasis" and dialog.table.item(0, 2).text().startswith("Hepatocellular")
    # The lesions by their numbers in the lesion table, not their ids.
    assert dialog.table.item(0, 0).text() == "L1, L2"
    # Two readers, two labels: nothing is proposed, and nothing can be set until a label is chosen.
    dialog.table.selectRow(0)
    assert dialog.final_label.currentData() is None and not dialog.adjudicate_button.isEnabled()
    dialog.adjudicate_button.click()
    assert window.store.document.adjudications == []
    asked: list[str] = []
    dialog.confirm = lambda title, text: asked.append(text) or True
    dialog.final_label.setCurrentIndex(dialog.final_label.findData("metastasis"))
    dialog.adjudicate_button.click()
    # Dr Bob outlined one of the two: asked before his decision is recorded.
    assert len(asked) == 1 and "You outlined one of these lesions yourself" in asked[0]
    decision = window.store.document.adjudications[0]
    assert decision.final_label == "metastasis" and decision.decided_by == "Dr Bob"
    assert dialog.summary.groups[0].final_label == "metastasis"
    assert "Dr Bob" in dialog.table.item(0, dialog.table.columnCount() - 1).text()
    # Selecting the decided finding again shows its final label in the box.
    dialog.final_label.setCurrentIndex(0)
    dialog.table.clearSelection()
    dialog.table.selectRow(0)
    assert dialog.final_label.currentData() == "metastasis"
    # The longest class name in the reader, majority and final columns: every column, who decided
    # included, still shows without scrolling sideways; the whole text is in the tooltip.
    dialog.final_label.setCurrentIndex(dialog.final_label.findData("hcc"))
    dialog.adjudicate_button.click()
    dialog.resize(800, 520)
    qtbot.wait(50)
    table = dialog.table
    right = max(table.columnViewportPosition(c) + table.columnWidth(c) for c in range(table.columnCount()))
    assert right <= table.viewport().width() and table.horizontalScrollBar().maximum() == 0
    assert table.item(0, 2).toolTip().startswith("Hepatocellular carcinoma (HCC)")
    dialog.close()


def test_export_seg_and_dataset_then_reimport_seg(qtbot, window, tmp_path, demo_study):
    window.import_annotations(demo_study.ground_truth_path)
    assert len(window.store.document.lesions) == 6
    out = tmp_path / "exports"
    with qtbot.waitSignal(window.export("seg", out).finished, timeout=60000):
        pass
    seg_files = list(out.glob("*-seg.dcm"))
    assert len(seg_files) == 1 and "6 lesion(s) exported" in window.last_message
    import pydicom

    seg = pydicom.dcmread(seg_files[0])
    assert len(seg.SegmentSequence) == 6
    assert "Hepatica" not in str(seg.PatientName) and seg.PatientID != "LV-DEMO-0001"
    with qtbot.waitSignal(window.export("dataset", out / "dataset").finished, timeout=60000):
        pass
    assert len((out / "dataset" / "lesions.jsonl").read_text().splitlines()) == 6
    # Exporting into the study's own folder is refused.
    with qtbot.waitSignal(window.export("csv", demo_study.dicom_dir / "sub").failed, timeout=60000) as blocker:
        pass
    assert "never writes there" in blocker.args[0]
    # The SEG names its reader by pseudonym only; back on the installation that wrote it (the same key), the
    # six lesions (new ones: the demo's ids are not liverview's) are the reader's again, not a stranger's.
    assert "ground-truth" not in str(seg.ContentCreatorName)
    before = {lesion.id for lesion in window.store.document.lesions}
    assert window.import_seg(seg_files[0]) == 6
    back = [lesion for lesion in window.store.document.lesions if lesion.id not in before]
    assert {lesion.reader for lesion in back} == {"ground-truth"}


def test_label_does_not_carry_over_to_new_lesions(qtbot, window):
    """#16 defect 4: after labelling one lesion and Ctrl+N, the next outline starts unlabelled."""
    qtbot.keyClick(window, Qt.Key_O)
    drag(viewport(window), screen_of_pixel(window, 90, 100), screen_of_pixel(window, 110, 118))
    qtbot.keyClick(window, Qt.Key_4, Qt.ControlModifier)  # metastasis, on the selected lesion
    qtbot.keyClick(window, Qt.Key_N, Qt.ControlModifier)
    assert window.annotator.selected() is None
    drag(viewport(window), screen_of_pixel(window, 160, 150), screen_of_pixel(window, 180, 168))
    first, second = window.store.document.lesions
    assert first.label == "metastasis" and second.label is None
    # Without Ctrl+N too: a label given to one lesion never arms the next.
    drag(viewport(window), screen_of_pixel(window, 60, 180), screen_of_pixel(window, 75, 195))
    assert window.store.document.lesions[-1].label is None


def test_another_readers_lesion_cannot_be_relabelled_or_moved(qtbot, window, tmp_path):
    """#16 defect 3: Ctrl+1…9 and dragging leave a colleague's lesion as they made it, and say why."""
    qtbot.keyClick(window, Qt.Key_O)
    drag(viewport(window), screen_of_pixel(window, 90, 100), screen_of_pixel(window, 110, 118))
    qtbot.keyClick(window, Qt.Key_2, Qt.ControlModifier)
    theirs = window.store.document.lesions[0]
    window.store.document.lesions[0].reader = "Dr Bob"  # as if imported from Dr Bob's file
    label, points = theirs.label, list(theirs.rois[0].points_xy)
    window.annotator.select(theirs.id)
    qtbot.keyClick(window, Qt.Key_4, Qt.ControlModifier)
    assert window.store.document.lesion(theirs.id).label == label
    assert "Dr Bob" in window.statusBar().currentMessage()
    qtbot.keyClick(window, Qt.Key_V)
    drag(viewport(window), screen_of_pixel(window, 100, 109), screen_of_pixel(window, 130, 130))
    assert window.store.document.lesion(theirs.id).rois[0].points_xy == points
    qtbot.keyClick(window, Qt.Key_Delete, Qt.ShiftModifier)
    assert theirs.id in [lesion.id for lesion in window.store.document.lesions]


def test_lesion_table_and_csv_give_the_same_numbers(qtbot, window, tmp_path):
    """#16 defect 6: one measurement, one rounding, whether shown, saved, undone or exported."""
    import csv

    from liverview.annotations.document import Roi

    z = window.viewer.views[0].slice_index
    # A right edge 0.004 px off a pixel centre: stored at the file's precision it must measure the same.
    roi = Roi(z, [(95.5, 95.5), (120.004, 95.5), (120.004, 118.5), (95.5, 118.5)],
              sop_instance_uid=window.volume.sop_instance_uids[z])
    lesion = window.store.add_lesion(roi, label="hcc")
    table = window.lesion_panel.table
    qtbot.waitUntil(lambda: table.rowCount() == 1)
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    shown = {h: table.item(0, c).text() for c, h in enumerate(headers)}
    window.store.flush()
    with qtbot.waitSignal(window.export("csv", tmp_path / "out", pseudonymize=False).finished, timeout=20000):
        pass
    row = next(csv.DictReader(next((tmp_path / "out").glob("*.csv")).open()))
    assert row["lesion_id"] == lesion.id
    pairs = {"Max": "max_hu", "Min": "min_hu", "Mean": "mean_hu", "Long": "long_axis_mm", "Volume mL": "volume_ml"}
    for header, column in pairs.items():
        matching = [h for h in headers if h.startswith(header)]
        assert matching, headers
        assert shown[matching[0]].split()[0] == row[column], (header, shown[matching[0]], row[column])


def test_lesion_table_reads_at_a_glance(qtbot, window, demo_study):
    """#16 reading comfort: lesions numbered L1, L2, … per series, the table fits the panel without
    sideways scrolling, the selected lesion's details are spelled out, tags carry the number."""
    window.import_annotations(demo_study.ground_truth_path)
    qtbot.keyClick(window, Qt.Key_O)
    drag(viewport(window), screen_of_pixel(window, 30, 30), screen_of_pixel(window, 45, 45))
    table = window.lesion_panel.table
    qtbot.waitUntil(lambda: table.rowCount() == 7)
    names = [table.item(row, 0).text() for row in range(table.rowCount())]
    assert names == [f"L{n}" for n in range(1, 8)]
    visible = sum(table.columnWidth(c) for c in range(table.columnCount()) if not table.isColumnHidden(c))
    assert visible <= table.viewport().width() and table.horizontalScrollBar().maximum() == 0
    drawn = window.store.document.lesions[-1]
    assert window.lesion_panel.selected_label.text().startswith("L7: unlabelled")
    assert "Long" in window.lesion_panel.details.text() and "Mean" in window.lesion_panel.details.text()
    tags = [item.toPlainText() for item in window.annotator.overlay._items if hasattr(item, "toPlainText")]
    assert "L7 unlabelled · Dr Ada" in tags and drawn.id not in " ".join(tags)  # two readers: each tag names its own


def test_tags_of_neighbouring_lesions_do_not_cover_each_other(qtbot, window):
    """#16 reading comfort: two small lesions side by side on one slice (their tags would start a few
    pixels apart, each wider than the gap): both tags stay readable, the later one moved clear."""
    from liverview.annotations.document import Roi

    z = window.viewer.views[0].slice_index
    uid = window.volume.sop_instance_uids[z]
    for x in (60.0, 68.0):
        window.store.add_lesion(Roi(z, [(x, 100.0), (x + 5, 100.0), (x + 5, 105.0), (x, 105.0)], sop_instance_uid=uid),
                                label="metastasis")
    overlay = window.annotator.overlay
    qtbot.waitUntil(lambda: sum(hasattr(item, "toPlainText") for item in overlay._items) >= 2)
    tags = [item for item in overlay._items if hasattr(item, "toPlainText")]
    boxes = [tag.mapRectToScene(tag.boundingRect()) for tag in tags]
    assert all(box.width() > 40 for box in boxes)
    assert not any(a.intersects(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_the_tag_of_a_lesion_at_the_right_edge_stays_inside_the_view(qtbot, window):
    """The tag starts at the outline's left edge and runs right: near the view's right edge its name was
    cut off ("L1 Hepatocellular carcinoma (H"). It now ends inside the view, still above its outline."""
    from liverview.annotations.document import Roi

    view = window.viewer.views[0]
    z = view.slice_index
    x_right = window.volume.shape[2] - 3.0
    window.store.add_lesion(Roi(z, [(x_right - 6, 100.0), (x_right, 100.0), (x_right, 106.0), (x_right - 6, 106.0)],
                                sop_instance_uid=window.volume.sop_instance_uids[z]), label="hcc")
    overlay = window.annotator.overlay
    qtbot.waitUntil(lambda: any(hasattr(item, "toPlainText") for item in overlay._items))
    view.view_box.autoRange(padding=0)  # the image's right edge at (or inside) the view's
    window.annotator.redraw()
    tag = next(item for item in overlay._items if hasattr(item, "toPlainText"))
    box = tag.mapRectToScene(tag.boundingRect())
    visible = view.view_box.sceneBoundingRect()
    assert box.width() > 100
    assert box.right() <= visible.right() + 1 and box.left() >= visible.left() - 1
    outline_top = view.view_box.mapViewToScene(QPointF(*view.pixel_to_view(x_right - 6, 100.0)))
    assert box.bottom() <= outline_top.y() + 1


def test_status_messages_name_a_lesion_by_its_number_in_the_table(qtbot, window):
    qtbot.keyClick(window, Qt.Key_X)
    drag(viewport(window), screen_of_pixel(window, 80, 80), screen_of_pixel(window, 100, 100))
    lesion = window.store.document.lesions[-1]
    number = window.store.document.lesion_numbers()[lesion.id]
    qtbot.keyClick(window, Qt.Key_4, Qt.ControlModifier)
    message = window.statusBar().currentMessage()
    assert message.startswith(f"Lesion {number}: ") and lesion.id not in message


def test_a_one_click_outline_of_normal_liver_is_not_taken_silently(qtbot, window):
    """A click on plain parenchyma grows over the liver: such an outline, far larger than a lesion, is
    either refused or comes with a warning that says how large it is and how to take it back."""
    from liverview.imaging.contrast_phase import _patient_frame, find_liver
    from liverview.imaging.measure import diameters_mm

    z = window.viewer.views[0].slice_index
    pixel = window.volume.spacing_mm[1:]
    liver = find_liver(window.volume.array[z].astype(np.float32), pixel, _patient_frame(
        window.volume.shape[1:], pixel, (1, 0, 0), (0, 1, 0)))
    import cv2

    depth = cv2.distanceTransform(liver.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    qtbot.keyClick(window, Qt.Key_A)
    click(viewport(window), screen_of_pixel(window, float(x), float(y)))
    lesions = window.store.document.lesions
    message = window.statusBar().currentMessage()
    if lesions:
        long_axis = diameters_mm(lesions[0].rois[0].points_xy, pixel)[0]
        assert long_axis > 100 and f"{long_axis:.0f} mm across" in message and "Ctrl+Z" in message
    else:
        assert message.startswith("No outline found there")


def test_export_messages_fit_the_screen_and_say_why(qtbot, window, demo_study, tmp_path):
    """Walkthrough step 13: an export that wrote no lesion says why instead of "Export finished"; an
    export with its images names a folder and a count, not every slice; a failure reads as a sentence."""
    from pathlib import Path

    qtbot.keyClick(window, Qt.Key_X)
    drag(viewport(window), screen_of_pixel(window, 80, 80), screen_of_pixel(window, 100, 100))
    assert window.store.document.lesions[0].label is None
    with qtbot.waitSignal(window.export("dataset", tmp_path / "dataset").finished, timeout=60000):
        pass
    assert window.last_message == ("0 lesion(s) exported: no lesion has a label, and only labelled lesions "
                                   "were asked for")

    window.import_annotations(demo_study.ground_truth_path)
    with qtbot.waitSignal(window.export("seg", tmp_path / "with-images", with_images=True).finished, timeout=60000):
        pass
    written = [p for p in (tmp_path / "with-images").rglob("*") if p.is_file()]
    assert len(written) > 6 and f"{len(written)} files in {tmp_path / 'with-images'}" in window.last_message
    assert len(window.last_message.splitlines()) == 1

    inside = Path(window.volume.info.files[0]).parent / "exports"
    with qtbot.waitSignal(window.export("csv", inside).failed, timeout=60000) as failure:
        pass
    assert not failure.args[0].startswith("ExportError") and "inside" in failure.args[0]


def test_the_export_dialog_offers_only_what_the_format_uses(qtbot):
    from PySide6.QtWidgets import QDialogButtonBox

    from liverview.gui.export_dialog import ExportDialog

    dialog = ExportDialog("/tmp", fmt="csv")
    qtbot.addWidget(dialog)
    assert not dialog.with_images.isEnabled() and not dialog.labelled_only.isEnabled()
    dialog.format.setCurrentIndex(dialog.format.findData("seg"))
    assert dialog.with_images.isEnabled() and not dialog.labelled_only.isEnabled()
    # A pseudonymised SEG alone resolves against no images another tool has: the images go with it by default.
    assert dialog.with_images.isChecked() and dialog.choice().with_images
    dialog.pseudonymize.setChecked(False)
    assert not dialog.with_images.isEnabled()
    dialog.format.setCurrentIndex(dialog.format.findData("dataset"))
    assert dialog.labelled_only.isEnabled() and not dialog.with_images.isEnabled()
    box = dialog.findChild(QDialogButtonBox)
    assert box.button(QDialogButtonBox.Ok).text() == "Export"


def test_the_export_dialog_offers_a_dataset_of_several_readers_as_their_consensus(qtbot):
    from liverview.annotations.export_selection import ExportReaders, ReaderScope
    from liverview.gui.export_dialog import ExportDialog

    every = ExportReaders(ReaderScope.ALL_READERS)
    dialog = ExportDialog("/tmp", fmt="seg", readers=["Dr A", "Dr B"], default=every)
    qtbot.addWidget(dialog)
    assert dialog.readers.currentData() == every
    dialog.format.setCurrentIndex(dialog.format.findData("dataset"))
    assert dialog.readers.currentData().scope is ReaderScope.CONSENSUS
    alone = ExportDialog("/tmp", fmt="seg", readers=["Dr A"], default=ExportReaders(ReaderScope.READER, "Dr A"))
    qtbot.addWidget(alone)
    alone.format.setCurrentIndex(alone.format.findData("dataset"))
    assert alone.readers.currentData() == ExportReaders(ReaderScope.READER, "Dr A")


def test_two_readers_outlines_of_one_finding_say_whose_each_is(qtbot, window, tmp_path):
    """Walkthrough step 11: Dr Bob's and Dr Ada's outlines of the same lesion showed as two lesions with
    two tags over one circle and two table rows alike, with no reader named anywhere."""
    import pyqtgraph as pg

    from liverview.annotations.document import Lesion, Roi

    def tags():
        return sorted(item.textItem.toPlainText() for item in window.annotator.overlay._items
                      if isinstance(item, pg.TextItem))

    table = window.lesion_panel.table
    reader_column = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())].index("Reader")
    qtbot.keyClick(window, Qt.Key_O)
    drag(viewport(window), screen_of_pixel(window, 90, 100), screen_of_pixel(window, 110, 118))
    qtbot.keyClick(window, Qt.Key_2, Qt.ControlModifier)
    assert tags() == ["L1 Hemangioma"] and table.isColumnHidden(reader_column)
    mine = window.store.document.lesions[0]
    theirs = Lesion(reader="Dr Bob", label="metastasis", rois=[Roi(r.slice_index, r.points_xy) for r in mine.rois])
    window.store.document.lesions.append(theirs)  # as if imported from Dr Bob's file
    window.store.set_label(mine.id, "hemangioma")  # any edit refreshes the views
    qtbot.waitUntil(lambda: len(tags()) == 2)
    assert tags() == ["L1 Hemangioma · Dr Ada", "L2 Metastasis · Dr Bob"]
    assert not table.isColumnHidden(reader_column)
    assert sorted(table.item(r, reader_column).text() for r in range(table.rowCount())) == ["Dr Ada", "Dr Bob"]
    right = max(table.columnViewportPosition(c) + table.columnWidth(c) for c in range(table.columnCount())
                if not table.isColumnHidden(c))
    assert right <= table.viewport().width()
    window.grab().save(str(tmp_path / "two-readers.png"))


def test_the_reader_name_in_the_status_bar_changes_the_reader(qtbot, window, monkeypatch):
    """Walkthrough step 11: the name stays set across restarts; changing it was only under File > Settings."""
    from liverview.gui import main_window

    monkeypatch.setattr(main_window.QInputDialog, "getText", staticmethod(lambda *args, **kwargs: ("Dr Bob", True)))
    assert window.reader_label.text() == "Reader: Dr Ada"
    # Nothing selected: no confidence or note is on offer as if it were a lesion's.
    assert not window.lesion_panel.confidence.isEnabled() and not window.lesion_panel.note.isEnabled()
    qtbot.mouseClick(window.reader_label, Qt.LeftButton)
    assert window.reader_label.text() == "Reader: Dr Bob" and window.store.reader == "Dr Bob"
    assert window.settings.value("reader/name") == "Dr Bob"


def test_going_to_a_lesion_shows_the_slice_the_model_reads(qtbot, window):
    """The view went to the outline with the largest bounding box, the model reads the one with the largest
    area: the panel said "on slice 9" under a heatmap drawn on slice 8. Both now use the lesion's key slice."""
    from liverview.annotations.document import Roi
    from liverview.annotations.measurements import lesion_key_slice

    z = window.viewer.views[0].slice_index
    uids = window.volume.sop_instance_uids
    sliver = [(40.0, 40.0), (120.0, 118.0), (121.0, 121.0), (41.0, 43.0)]  # long and thin: large box, small area
    square = [(60.0, 60.0), (90.0, 60.0), (90.0, 90.0), (60.0, 90.0)]
    lesion = window.store.add_lesion(Roi(z, sliver, sop_instance_uid=uids[z]), label="metastasis")
    window.store.add_roi(lesion.id, Roi(z + 1, square, sop_instance_uid=uids[z + 1]))
    stored = window.store.document.lesion(lesion.id)
    assert lesion_key_slice(window.volume, stored) == z + 1
    window.jump_to_lesion(lesion.id)
    assert window.viewer.views[0].slice_index == z + 1


def test_a_note_confirmed_with_enter_is_saved(qtbot, window):
    """Walkthrough review: Return in the note field went to the window's "Close polygon" shortcut, so the
    note stayed unsaved until the field lost focus, and a power cut lost it."""
    from liverview.annotations.document import Roi

    z = window.viewer.views[0].slice_index
    lesion = window.store.add_lesion(Roi(z, [(95.0, 95.0), (120.0, 95.0), (120.0, 118.0)],
                                         sop_instance_uid=window.volume.sop_instance_uids[z]), label="hcc")
    window.jump_to_lesion(lesion.id)
    note = window.lesion_panel.note
    qtbot.waitUntil(note.isEnabled)
    note.setFocus()
    qtbot.keyClicks(note, "rim enhancement")
    qtbot.keyClick(note, Qt.Key_Return)
    assert window.store.document.lesion(lesion.id).note == "rim enhancement"


def test_replacing_another_readers_decision_is_asked_first(qtbot, window):
    """Walkthrough review: Dr Bob set the final label of a finding Dr Senior had decided ("biopsy"), and
    Senior's decision and note were gone without a question."""
    from liverview.annotations.document import Lesion, Roi

    z = window.viewer.views[0].slice_index
    points = [(80.0, 80.0), (100.0, 80.0), (100.0, 100.0), (80.0, 100.0)]
    mine = window.store.add_lesion(Roi(z, points, sop_instance_uid=window.volume.sop_instance_uids[z]), label="hcc")
    theirs = Lesion(reader="Dr Bob", label="metastasis", rois=[Roi(z, points, sop_instance_uid=mine.rois[0].sop_instance_uid)])
    window.store.document.lesions.append(theirs)
    window.store.reader = "Dr Senior"
    window.store.adjudicate([mine.id, theirs.id], "hcc", note="biopsy")
    window.store.reader = "Dr Bob"
    window.show_consensus()
    dialog = window.consensus_dialog
    answers, asked = [False, True], []
    dialog.confirm = lambda title, text: asked.append(text) or answers.pop(0)
    dialog.table.selectRow(0)
    dialog.final_label.setCurrentIndex(dialog.final_label.findData("metastasis"))
    dialog.adjudicate_button.click()
    assert "Dr Senior decided Hepatocellular carcinoma" in asked[0] and "biopsy" in asked[0]
    assert [(a.final_label, a.decided_by) for a in window.store.document.adjudications] == [("hcc", "Dr Senior")]
    dialog.adjudicate_button.click()
    assert [(a.final_label, a.decided_by) for a in window.store.document.adjudications] == [("metastasis", "Dr Bob")]
    # The same label is asked too (regression review): the decision would become Dr Senior's, without Bob's note.
    window.store.reader = "Dr Senior"
    answers.append(False)
    dialog.table.selectRow(0)
    dialog.final_label.setCurrentIndex(dialog.final_label.findData("metastasis"))
    dialog.adjudicate_button.click()
    assert len(asked) == 3 and "Dr Bob decided Metastasis" in asked[2]
    assert [(a.final_label, a.decided_by) for a in window.store.document.adjudications] == [("metastasis", "Dr Bob")]
