"""The viewer on the real CT series, driven with real Qt events (offscreen)."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, QSettings, Qt
from PySide6.QtGui import QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication, QLabel, QMessageBox

from liverview.gui.main_window import MainWindow
from liverview.gui.theme import apply_dark_theme


@pytest.fixture
def window(qtbot, tmp_path):
    apply_dark_theme(QApplication.instance())
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    settings.setValue("model/preload", False)  # these tests are about viewing and drawing, not the model
    win = MainWindow(settings)
    win.resize(1400, 900)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


def open_and_wait(qtbot, window, path):
    window.open_paths([str(path)])
    qtbot.waitUntil(lambda: window.volume is not None and window.volume.loaded.all()
                    and not window.progress.isVisible(), timeout=30000)
    return window.volume


def send_mouse(widget, kind, pos, button=Qt.NoButton, buttons=Qt.NoButton):
    event = QMouseEvent(kind, QPointF(pos), QPointF(widget.mapToGlobal(pos)), button, buttons, Qt.NoModifier)
    QApplication.sendEvent(widget, event)


def test_open_series_shows_middle_slice_and_status(qtbot, window, crlm_dir):
    volume = open_and_wait(qtbot, window, crlm_dir)
    assert volume.shape == (41, 512, 512)
    axial = window.viewer.views[0]
    assert axial.slice_index == 20
    assert np.array_equal(axial.image.image, volume.array[20])
    assert window.viewer.preset_name == "Liver"
    assert "CRLM-CT-1004" in window.windowTitle()
    assert window.browser.tree.topLevelItemCount() == 1
    assert window.browser.skipped_button.isHidden()  # every file of the series folder loaded
    # Reformats are in physical proportions: 41 slices x 5 mm tall, 512 x 0.797 mm wide.
    coronal = window.viewer.views[1]
    assert coronal.image.width() == 512 and coronal.image.height() == 41
    rect = coronal.image.mapRectToParent(coronal.image.boundingRect())
    assert rect.height() == pytest.approx(41 * 5.0) and rect.width() == pytest.approx(512 * 0.796875)


def axial_z_mm(window):
    return float(window.volume.positions_mm[window.viewer.views[0].slice_index][2])


def test_scroll_with_wheel_keys_and_slider_in_reading_order(qtbot, window, crlm_dir):
    """As in PACS: slice 1 is the top of the stack (crlm-ct-1004 stores it last, z -175 mm, its
    instance numbers running head to feet), and the wheel toward the reader, Down and Page Down page
    toward the feet."""
    volume = open_and_wait(qtbot, window, crlm_dir)
    assert volume.positions_mm[0][2] < volume.positions_mm[-1][2]  # stored feet first
    axial = window.viewer.views[0]
    viewport = axial.graphics.viewport()
    centre = viewport.rect().center()
    start_mm = axial_z_mm(window)
    wheel = QWheelEvent(QPointF(centre), QPointF(viewport.mapToGlobal(centre)), QPoint(0, 0), QPoint(0, -120),
                        Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase, False)
    QApplication.sendEvent(viewport, wheel)
    assert axial_z_mm(window) == pytest.approx(start_mm - 5.0)
    assert window.slice_label.text() == "Slice 22/41"
    window.viewer.active = axial
    qtbot.keyClick(window, Qt.Key_Down)
    assert axial_z_mm(window) == pytest.approx(start_mm - 10.0)
    qtbot.keyClick(window, Qt.Key_PageUp)
    assert axial_z_mm(window) == pytest.approx(start_mm - 10.0 + 4 * 5.0)
    qtbot.keyClick(window, Qt.Key_Home)
    assert axial_z_mm(window) == pytest.approx(-175.0) and window.slice_label.text() == "Slice 1/41"
    assert "Axial  1/41" in axial._corner_text["bl"]
    qtbot.keyClick(window, Qt.Key_End)
    assert axial_z_mm(window) == pytest.approx(-375.0) and window.slice_label.text() == "Slice 41/41"
    # The slider's top is the top slice.
    slider = window.viewer.slider
    assert not slider.invertedAppearance()
    slider.setValue(slider.maximum())
    assert axial_z_mm(window) == pytest.approx(-175.0)
    slider.setValue(3)
    assert axial.slice_index == 3
    assert np.array_equal(axial.image.image, window.volume.array[3])
    # The coronal and sagittal crosshairs follow the axial slice.
    assert window.viewer.cursor[0] == 3


def test_positions_in_the_corners_are_the_patient_coordinates(qtbot, window, crlm_dir):
    volume = open_and_wait(qtbot, window, crlm_dir)
    viewer = window.viewer
    viewer.set_cursor(np.array([7, 150, 400]))
    lps = volume.index_to_patient(7, 150, 400)
    axial, coronal, sagittal = viewer.views
    assert f"Pos {lps[2]:.1f} mm" in axial._corner_text["bl"]
    assert f"Pos {lps[1]:.1f} mm" in coronal._corner_text["bl"]
    assert f"Pos {lps[0]:.1f} mm" in sagittal._corner_text["bl"]  # the patient's left is +x, as in LPS
    assert lps[0] > 0


def test_window_level_presets_and_drag(qtbot, window, crlm_dir):
    open_and_wait(qtbot, window, crlm_dir)
    viewer = window.viewer
    qtbot.keyClick(window, Qt.Key_2)
    assert (viewer.window_width, viewer.window_center) == (400, 40)
    assert viewer.views[0].image.levels == pytest.approx([-160, 240])
    qtbot.keyClick(window, Qt.Key_3)
    assert viewer.preset_name == "Bone"
    qtbot.keyClick(window, Qt.Key_5)
    assert (viewer.window_center, viewer.window_width) == (40, 400)  # crlm-ct-1004 carries WC 40 / WW 400
    viewport = viewer.views[0].graphics.viewport()
    start = viewport.rect().center()
    send_mouse(viewport, QEvent.MouseButtonPress, start, Qt.LeftButton, Qt.LeftButton)
    for step in range(1, 6):
        send_mouse(viewport, QEvent.MouseMove, start + QPoint(10 * step, 4 * step), Qt.NoButton, Qt.LeftButton)
    send_mouse(viewport, QEvent.MouseButtonRelease, start + QPoint(50, 20), Qt.LeftButton, Qt.NoButton)
    assert viewer.window_width > 400 and viewer.window_center > 40
    assert viewer.preset_name == "Custom"


def test_hu_readout_under_cursor(qtbot, window, crlm_dir):
    volume = open_and_wait(qtbot, window, crlm_dir)
    axial = window.viewer.views[0]
    viewport = axial.graphics.viewport()
    pos = viewport.rect().center() + QPoint(37, -21)
    send_mouse(viewport, QEvent.MouseMove, pos)
    index = axial.scene_to_index(axial.view_box.mapSceneToView(axial.graphics.mapToScene(pos)))
    z, y, x = (int(round(v)) for v in index)
    assert z == axial.slice_index
    assert window.value_label.text() == f"{volume.array[z, y, x]} HU"
    assert window.pixel_label.text() == f"x {x}  y {y}  slice {volume.shape[0] - z}"
    lps = volume.index_to_patient(z, y, x)
    assert f"{lps[2]:.1f}" in window.position_label.text()


def test_click_moves_linked_crosshair(qtbot, window, crlm_dir):
    open_and_wait(qtbot, window, crlm_dir)
    viewer = window.viewer
    axial, coronal, sagittal = viewer.views
    viewport = axial.graphics.viewport()
    pos = viewport.rect().center() + QPoint(60, 30)
    send_mouse(viewport, QEvent.MouseButtonPress, pos, Qt.LeftButton, Qt.LeftButton)
    send_mouse(viewport, QEvent.MouseButtonRelease, pos, Qt.LeftButton, Qt.NoButton)
    _, y, x = viewer.cursor
    assert coronal.slice_index == y and sagittal.slice_index == x
    assert (y, x) != (256, 256)


def test_dicom_strings_are_plain_text(qtbot, window, crlm_copy):
    for path in crlm_copy.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientName = "<b>Evil</b>^<img src=x>"
        ds.SeriesDescription = "<h1>big</h1>"
        ds.save_as(path)
    open_and_wait(qtbot, window, crlm_copy)
    labels = window.viewer.views[0].findChildren(QLabel)
    overlay = [lab for lab in labels if "<b>Evil</b>" in lab.text()]
    assert overlay and all(lab.textFormat() == Qt.PlainText for lab in overlay)
    assert "<h1>big</h1>" in window.windowTitle()
    study = window.browser.tree.topLevelItem(0)
    assert "<b>Evil</b>" in study.text(0)  # QTreeWidgetItem text is never interpreted as markup
    from liverview.gui.series_browser import plain_tooltip

    assert "&lt;h1&gt;big&lt;/h1&gt;" in plain_tooltip(ds.SeriesDescription)


def test_skipped_files_listed_with_reasons(qtbot, window, crlm_copy):
    (crlm_copy / "broken.dcm").write_bytes(b"DICM" * 10)
    open_and_wait(qtbot, window, crlm_copy)
    from liverview.gui.series_browser import SkippedFilesDialog

    dialog = SkippedFilesDialog(window.browser.scan.skipped)
    rows = {dialog.table.item(r, 0).text().rsplit("/", 1)[-1]: dialog.table.item(r, 1).text()
            for r in range(dialog.table.rowCount())}
    assert set(rows) == {"broken.dcm"}
    assert all(reason for reason in rows.values())


def test_settings_remember_last_folder_and_geometry(qtbot, window, crlm_dir, tmp_path):
    open_and_wait(qtbot, window, crlm_dir)
    window.resize(790, 520)  # the offscreen screen is 800 x 600
    expected = window.size()
    window.close()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    settings.setValue("model/preload", False)  # these tests are about viewing and drawing, not the model
    assert settings.value("paths/last_folder") == str(crlm_dir)
    again = MainWindow(settings)
    qtbot.addWidget(again)
    assert again.size().height() == expected.height() == 520


def test_background_task_cancel_runs_off_gui_thread(qtbot, crlm_dir):
    import threading

    from liverview.gui.workers import BackgroundTask
    from liverview.io import allocate_volume, fill_volume, scan_paths

    info = scan_paths(crlm_dir).series[0]
    gate = threading.Event()
    seen = {}

    def job(progress, should_stop, report):
        seen["thread"] = threading.get_ident()

        def first_progress(fraction, message):
            gate.wait(10)
            progress(fraction, message)

        return fill_volume(allocate_volume(info), progress=first_progress, should_stop=should_stop)

    task = BackgroundTask(job)
    finished = []
    task.finished.connect(finished.append)
    with qtbot.waitSignal(task.cancelled, timeout=10000):
        task.start()
        task.cancel()
        gate.set()
    assert not finished
    assert seen["thread"] != threading.get_ident()
    task.wait()


def test_multi_series_export_lists_every_series(qtbot, window, pacs_export):
    volume = open_and_wait(qtbot, window, pacs_export)
    study = window.browser.tree.topLevelItem(0)
    assert window.browser.tree.topLevelItemCount() == 1 and study.childCount() == 3
    qtbot.waitUntil(lambda: all(not study.child(i).icon(0).isNull() for i in range(3)), timeout=10000)
    assert volume.info.n_images == 41 and volume.info.plane == "axial"
    assert "1 file(s) skipped" in window.browser.skipped_button.text()
    localizer = next(study.child(i) for i in range(3) if "coronal" in study.child(i).text(0))
    window.browser.tree.itemActivated.emit(localizer, 0)
    qtbot.waitUntil(lambda: window.volume.info.n_images == 1 and window.volume.loaded.all(), timeout=10000)
    assert window.viewer.views[0].title == "Coronal"


def test_drop_a_folder_opens_it(qtbot, window, crlm_dir):
    from PySide6.QtCore import QMimeData, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(crlm_dir))])
    event = QDropEvent(QPointF(100, 100), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.volume is not None and window.volume.loaded.all(), timeout=30000)
    assert window.volume.shape == (41, 512, 512)


def test_uneven_spacing_shows_a_warning(qtbot, window, crlm_copy):
    (crlm_copy / "1-20.dcm").unlink()
    open_and_wait(qtbot, window, crlm_copy)
    assert window.warning_button.isVisible()
    assert any("missing" in w for w in window.volume.warnings)


def test_the_modality_is_named_once(qtbot, window, crlm_dir):
    """Walkthrough review: crlm-ct-1004's description begins with its modality ("CT CH/AB/PEL"), and
    the corner and the series browser read "CT CT CH/AB/PEL"."""
    open_and_wait(qtbot, window, crlm_dir)
    description = window.volume.info.identity.series_description
    assert description.startswith("CT ")
    assert window.viewer.views[0]._corner_text["tr"].splitlines()[0] == description
    first_line = window.browser._items[window.volume.info.key].text(0).splitlines()[0]
    assert first_line.endswith(description) and "CT CT" not in first_line


def test_corner_texts_never_overprint_in_a_narrow_view(qtbot, window, crlm_dir):
    open_and_wait(qtbot, window, crlm_dir)
    view = window.viewer.views[1]
    full_tr = view._corner_text["tr"]
    view.resize(150, 300)
    qtbot.waitUntil(lambda: view.graphics.width() <= 160)
    widths = {}
    for key in ("tl", "tr"):
        label = view.corner[key]
        widths[key] = max(label.fontMetrics().horizontalAdvance(line) for line in label.text().splitlines())
    assert widths["tl"] + widths["tr"] < view.graphics.width() - 40  # the orientation letter stays clear
    assert "…" in view.corner_text("tr") or "…" in view.corner_text("tl")
    view.resize(1200, 600)
    qtbot.waitUntil(lambda: view.graphics.width() >= 1100)
    assert view.corner_text("tr") == full_tr


def test_a_corner_with_an_empty_partner_keeps_its_whole_line(qtbot, window, crlm_dir):
    """The small coronal and sagittal views have nothing in their bottom-right corner: the bottom-left
    keeps "Coronal  257/512" whole instead of halving its room ("Coronal 257/5…")."""
    open_and_wait(qtbot, window, crlm_dir)
    view = window.viewer.views[1]
    assert view._corner_text["br"] == ""
    full = view._corner_text["bl"].splitlines()[0]
    view.resize(210, 300)
    qtbot.waitUntil(lambda: view.graphics.width() <= 220)
    width = view.corner["bl"].fontMetrics().horizontalAdvance(full)
    assert width < view.graphics.width() - 52  # fits beside the orientation letter's room
    assert view.corner_text("bl").splitlines()[0] == full


def test_each_series_shows_its_contrast_phase_in_the_browser_and_the_model_panel(qtbot, window, pacs_export, tmp_path):
    open_and_wait(qtbot, window, pacs_export)
    qtbot.waitUntil(lambda: bool(window.phases), timeout=30000)
    labels = {window.browser._items[key].text(0) for key in window.phases}
    # The venous original, and its copy named "ARTERIAL" (enhanced blood that a late arterial phase can
    # also show, so the description names it); the coronal localizer gets no phase line.
    axial = sorted(text.rsplit("\n", 1)[-1] for text in labels if "axial" in text)
    assert axial == ["Arterial (text only)", "Portal-venous (images)"]
    assert not any("venous" in text or "Arterial" in text for text in labels if "coronal" in text)
    model_line = window.classification.panel.model_label
    open_caption = window.browser._items[window.volume.info.key].text(0).rsplit("\n", 1)[-1]
    assert model_line.text().endswith(f"This series: {open_caption}")
    assert "aorta" in model_line.toolTip() and "HU" in model_line.toolTip()
    window.grab().save(str(tmp_path / "phases.png"))


def test_a_reader_corrects_the_phase_and_it_is_stored_with_the_annotations(qtbot, window, crlm_dir):
    window.settings.setValue("reader/name", "Dr Ada")
    open_and_wait(qtbot, window, crlm_dir)
    qtbot.waitUntil(lambda: bool(window.phases), timeout=30000)
    key = window.volume.info.key
    menu = window.browser.phase_menu(key)
    arterial = next(a for a in menu.actions() if a.text() == "Set phase: arterial")
    arterial.trigger()
    assert window.browser._items[key].text(0).endswith("Arterial (set by Dr Ada)")
    assert window.classification.panel.model_label.text().endswith("This series: Arterial (set by Dr Ada)")
    assert window.session.series_phase().phase.value == "arterial"
    stored = window.store.document.contrast_phase
    assert (stored.phase, stored.reader, stored.detected) == ("arterial", "Dr Ada", "portal_venous")
    window.store.undo()
    assert window.browser._items[key].text(0).endswith("Portal-venous (images)")
    window.store.redo()
    window.store.flush()
    # Reopening the series reads the correction back from the autosaved annotations.
    before = window.store
    window.open_series(window.volume.info)
    qtbot.waitUntil(lambda: window.store is not None and window.store is not before and window.volume.loaded.all(),
                    timeout=30000)
    assert window.store.document.contrast_phase == stored and window.session.series_phase().phase.value == "arterial"
    next(a for a in window.browser.phase_menu(key).actions() if a.text() == "Set phase: delayed").trigger()
    assert window.session.series_phase().phase.value == "delayed"
    next(a for a in window.browser.phase_menu(key).actions() if a.text() == "Phase as liverview decided").trigger()
    assert window.store.document.contrast_phase is None and window.session.series_phase().decided_by.value == "images"


def test_the_model_is_given_the_studys_other_phases(qtbot, window, pacs_export):
    """What a multiphase model reads besides the open series: the study's other axial CT series of the same
    Frame of Reference, with the phase the browser shows (the coronal localizer is not one of them)."""
    open_and_wait(qtbot, window, pacs_export)
    qtbot.waitUntil(lambda: bool(window.phases), timeout=30000)
    context = window.session.study_context()
    assert context.phase == window.session.series_phase()
    assert len(context.other_series) == 1
    info, phase, decided_by = context.other_series[0]
    assert info.key != window.volume.info.key and info.plane == "axial"
    assert phase == window.phases[info.key].phase.value and decided_by == window.phases[info.key].decided_by.value


def test_a_training_dataset_exported_from_the_window_holds_the_studys_other_phases(qtbot, window, pacs_export, tmp_path):
    import json as _json
    from pathlib import Path

    from liverview.annotations.dataset_format import read_lesion_lines, read_patch

    open_and_wait(qtbot, window, pacs_export)
    qtbot.waitUntil(lambda: bool(window.phases), timeout=30000)
    venous = next(s for s in window.scan.series if s.identity.series_description == "CT CH/AB/PEL" and s.plane == "axial")
    if window.volume.info.key != venous.key:
        before = window.store
        window.open_series(venous)
        qtbot.waitUntil(lambda: window.store is not before and window.volume.loaded.all(), timeout=30000)
    window.settings.setValue("reader/name", "Dr Ada")
    annotations = Path(__file__).resolve().parent.parent / "data" / "crlm-ct-1004-metastases.json"
    copy = tmp_path / "mine.json"
    data = _json.loads(annotations.read_text())
    data["series_instance_uid"] = venous.series_uid
    copy.write_text(_json.dumps(data))
    assert window.import_annotations(copy) == 1
    out = tmp_path / "dataset"
    with qtbot.waitSignal(window.export("dataset", out, pseudonymize=False).finished, timeout=60000):
        pass
    record = read_lesion_lines(out / "lesions.jsonl")[0]
    assert record["contrast_phase"] == "portal_venous" and list(record["phases"]) == ["arterial"]
    assert read_patch(out / record["file"]).phase_names == ["portal_venous", "arterial"]


def test_readout_follows_the_slice_under_a_still_mouse(qtbot, window, crlm_dir, demo_study):
    """#16 defect 9: scrolling under a still mouse updates the readout; another study clears it."""
    volume = open_and_wait(qtbot, window, crlm_dir)
    axial = window.viewer.views[0]
    viewport = axial.graphics.viewport()
    pos = viewport.rect().center() + QPoint(37, -21)
    send_mouse(viewport, QEvent.MouseMove, pos)
    _, y, x = (int(round(v)) for v in axial.scene_to_index(axial.view_box.mapSceneToView(axial.graphics.mapToScene(pos))))
    for step in (1, 5, -3):
        window.viewer.scroll(step)
        z = axial.slice_index
        assert window.pixel_label.text() == f"x {x}  y {y}  slice {volume.shape[0] - z}"
        assert window.value_label.text() == f"{volume.array[z, y, x]} HU"
    window.open_paths([str(demo_study.dicom_dir)])
    qtbot.waitUntil(lambda: window.volume is not volume and window.volume is not None, timeout=30000)
    assert window.value_label.text() == "" and window.position_label.text() == ""


def test_welcome_screen_and_an_empty_folder(qtbot, window, crlm_dir, tmp_path):
    """#16 defect 9: no Undo (nor a lesion's confidence) before a study is open; an empty folder leaves the open study as it was,
    title and browser included, and says so."""
    assert not window.undo_action.isEnabled() and not window.redo_action.isEnabled()
    # Nor a lesion's confidence and note, which would look like a choice already made.
    assert not window.lesion_panel.confidence.isEnabled() and not window.lesion_panel.note.isEnabled()
    open_and_wait(qtbot, window, crlm_dir)
    title, n_series = window.windowTitle(), window.browser.tree.topLevelItemCount()
    empty = tmp_path / "empty"
    empty.mkdir()
    window.open_paths([str(empty)])
    qtbot.waitUntil(lambda: "No DICOM series" in window.statusBar().currentMessage(), timeout=10000)
    assert window.windowTitle() == title and "CRLM-CT-1004" in title
    assert window.browser.tree.topLevelItemCount() == n_series
    assert not window.undo_action.isEnabled()


def test_cancelling_the_demo_generation_is_not_a_failure(qtbot, window):
    """#16 defect 9: Cancel while the demo study is generated says "Cancelled", not "Cannot create"."""
    failures = []
    window.open_demo()
    task = window.demo_task
    task.failed.connect(failures.append)
    with qtbot.waitSignal(task.cancelled, timeout=60000):
        qtbot.waitUntil(lambda: window.progress.isVisible() or task.is_running(), timeout=10000)
        window.cancel_tasks()
    assert failures == []
    qtbot.waitUntil(lambda: not task.is_running(), timeout=10000)
    assert not [w for w in QApplication.topLevelWidgets() if w.isVisible() and "Cannot create" in w.windowTitle()]


def test_the_model_preload_waits_until_the_series_is_read(qtbot, crlm_dir, tmp_path, monkeypatch):
    """Preloading the model at the first slice imported torch on the model's thread while that slice was
    painted: the paint waited up to 0.25 s behind the import (a quarter of the bench_first_slice runs)."""
    apply_dark_theme(QApplication.instance())
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)  # preload on, as installed
    win = MainWindow(settings)
    qtbot.addWidget(win)
    asked: list[bool] = []
    monkeypatch.setattr(win.classification, "ensure_model",
                        lambda quiet=False: asked.append(win.volume is not None and win.volume.loaded.all()))
    open_and_wait(qtbot, win, crlm_dir)
    qtbot.waitUntil(lambda: bool(asked), timeout=10000)
    assert asked == [True]
    win.close()


def test_a_series_opens_and_says_why_its_annotations_cannot_be_saved(qtbot, window, crlm_dir, tmp_path, monkeypatch):
    """A full data disk: the annotations' lock could not be written, the exception escaped, the viewer
    stayed on the welcome page and nothing said why."""
    import liverview.annotations.store as store_module

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setattr(store_module, "annotation_path", lambda study, series: blocked / f"{series}.json")
    open_and_wait(qtbot, window, crlm_dir)
    qtbot.waitUntil(lambda: window.store is not None, timeout=10000)
    assert window.stack.currentWidget() is not window.welcome
    said = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()
            and w.windowTitle() == "Annotations cannot be saved"]
    assert said and "cannot be written" in said[0].text()


def test_the_four_phase_demo_opens_on_its_portal_venous_series_with_every_phase_in_the_study(qtbot, window):
    """Walkthrough step 9 ("read on every phase of the study") could not be shown with the demo: it has one
    portal-venous series."""
    window.open_multiphase_demo()
    qtbot.waitUntil(lambda: window.volume is not None and window.volume.loaded.all() and window.store is not None
                    and len(window.phases) == 4, timeout=60000)
    assert "portal venous" in window.volume.info.identity.series_description  # not the largest series
    assert sorted(d.phase.value for d in window.phases.values()) == ["arterial", "delayed", "non_contrast",
                                                                      "portal_venous"]
    context = window.session.study_context()
    assert sorted(phase for _, phase, _ in context.other_series) == ["arterial", "delayed", "non_contrast"]


def test_cancelling_the_switch_to_another_series_keeps_the_browser_on_the_open_one(qtbot, window, monkeypatch):
    """Cancel in the unsaved-annotations question left the series clicked highlighted, not the one on screen."""
    import liverview.annotations.store as store_module
    from liverview.annotations.document import Roi

    window.open_multiphase_demo()
    qtbot.waitUntil(lambda: window.volume is not None and window.volume.loaded.all() and window.store is not None
                    and len(window.phases) == 4, timeout=60000)

    def disk_full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "write_text_atomic", disk_full)
    window.store.add_lesion(Roi(5, [(100.0, 100.0), (120.0, 100.0), (120.0, 120.0)]))
    monkeypatch.setattr(window, "ask_about_unsaved", lambda error, reason, leaving: "cancel")
    open_key = window.volume.info.key
    other = next(info for info in window.scan.series if info.key != open_key)
    window.browser.select(other.key)  # what the click did before the series was asked to open
    window.open_series(other)
    assert window.volume.info.key == open_key
    assert window.browser.tree.currentItem() is window.browser._items[open_key]


def test_the_last_study_is_offered_after_a_restart(qtbot, window, crlm_dir, tmp_path, monkeypatch):
    """#16 reading comfort: after a restart (or a crash) the study that was open is offered again."""
    from PySide6.QtWidgets import QMessageBox

    from liverview.app import offer_last_study

    open_and_wait(qtbot, window, crlm_dir)
    window.settings.sync()
    restarted = MainWindow(window.settings)
    qtbot.addWidget(restarted)
    assert restarted.last_study() == [str(crlm_dir.resolve())]
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.Yes)
    offer_last_study(restarted)
    qtbot.waitUntil(lambda: restarted.volume is not None and restarted.volume.loaded.all(), timeout=30000)
    assert restarted.volume.series_uid == window.volume.series_uid
    gone = tmp_path / "gone"
    restarted.settings.setValue("session/last_study", [str(gone)])
    assert restarted.last_study() == []  # a study that is no longer there is not offered


def test_a_seg_in_the_opened_folder_is_offered_as_lesions(qtbot, window, crlm_dir, tmp_path):
    """#17: a DICOM SEG that arrives with a study (here in its folder, as on a CD) is offered as lesions
    of the series it references, through the SEG import; it is no longer only a skipped file."""
    import json
    import shutil
    from pathlib import Path

    from liverview.annotations.document import AnnotationDocument
    from liverview.annotations.export_seg import export_seg

    volume = open_and_wait(qtbot, window, crlm_dir)
    outlines = Path(__file__).parents[1] / "data" / "crlm-ct-1004-metastases.json"
    document = AnnotationDocument.from_dict(json.loads(outlines.read_text()))
    study = tmp_path / "cd"
    shutil.copytree(crlm_dir, study)
    export_seg(volume, document, study / "zz-seg.dcm", pseudonymize=False, reader="Dr Other")
    window.open_paths([str(study)])
    qtbot.waitUntil(lambda: window.seg_offers.box is not None, timeout=30000)
    box = window.seg_offers.box
    assert box.text().startswith("1 segmentation arrived with this study")
    box.button(QMessageBox.Yes).click()
    # Dr Other sent the reference reader's lesion: it comes back as that reader's, not the sender's.
    assert [lesion.reader for lesion in window.store.document.lesions] == ["reference"]
    # Said without the file's name (a retrieved SEG's is a UID that crowds the status bar).
    assert window.statusBar().currentMessage().startswith("Imported 1 lesion(s) from a DICOM SEG, matched by")
    window.open_paths([str(study)])  # offered once: opening the folder again asks no more
    qtbot.waitUntil(lambda: window.volume is not None and window.volume.loaded.all(), timeout=30000)
    qtbot.wait(300)
    assert window.seg_offers.box is box


def test_a_failed_background_task_logs_one_line_to_the_console_and_the_traceback_to_the_file(qtbot, caplog):
    """Walkthrough step 13: a refused export printed "background task failed: Traceback ..." on the console."""
    import logging

    from liverview.annotations.export_common import ExportError
    from liverview.gui.workers import BackgroundTask
    from liverview.log_setup import ConsoleFormatter

    def job(progress, should_stop, report):
        raise ExportError("readers labelled the same finding differently")

    task = BackgroundTask(job)
    with caplog.at_level(logging.ERROR, logger="liverview.gui.workers"):
        with qtbot.waitSignal(task.failed, timeout=10000) as failed:
            task.start()
    task.wait()
    assert failed.args == ["readers labelled the same finding differently"]
    (record,) = [r for r in caplog.records if r.name == "liverview.gui.workers"]
    assert record.exc_info is not None  # the log file's handler writes the traceback
    line = ConsoleFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line == "ERROR liverview.gui.workers: background task failed: readers labelled the same finding differently"


def test_a_failed_dicom_write_is_said_by_its_reason_not_pydicoms_traceback():
    """An export to a full disk showed "With tag (7FE0,0010) got exception: …" and a traceback in the dialog."""
    from pydicom.tag import Tag, tag_in_exception

    from liverview.gui.workers import failure_sentence

    with pytest.raises(OSError) as raised:
        with tag_in_exception(Tag(0x7FE00010)):
            raise OSError(28, "No space left on device")
    assert failure_sentence(raised.value) == "No space left on device"


def test_a_recovery_after_a_crash_is_still_said_once_the_series_has_loaded(qtbot, window, crlm_copy):
    """The "Recovered N lesion(s) from an interrupted session" message was replaced by "Loaded 41 slices"
    within half a second: the reader was never told that the outlines came back from a crash."""
    from liverview.annotations.document import Roi

    volume = open_and_wait(qtbot, window, crlm_copy)
    window.store.add_lesion(Roi(20, [(200.0, 200.0), (230.0, 200.0), (230.0, 230.0)],
                                sop_instance_uid=volume.sop_instance_uids[20]))
    window.store.flush()
    lock = window.store.path.with_suffix(".lock")
    window._close_annotations()  # what opening the study again does first; it removes the lock
    lock.write_text("999999999")  # as if that session had died: its lock names a process that is gone
    window.open_paths([str(crlm_copy)])
    qtbot.waitUntil(lambda: window.statusBar().currentMessage().startswith("Loaded"), timeout=30000)
    assert "Recovered 1 lesion(s) from an interrupted session" in window.statusBar().currentMessage()


def test_a_new_task_does_not_show_the_previous_ones_progress_text(qtbot, window, crlm_dir):
    """Opening another series showed "Reading images 109/109" from the load before while the new one began."""
    from liverview.gui.workers import BackgroundTask

    open_and_wait(qtbot, window, crlm_dir)
    assert window.progress.format().startswith("Reading images")
    task = BackgroundTask(lambda progress, should_stop, report: None, window, name="test")
    window._track(task)
    assert window.progress.format() == "Starting…"
    task.start()
    qtbot.waitUntil(lambda: not task.is_running(), timeout=10000)


def test_the_name_given_at_the_first_outline_shows_as_the_reader(qtbot, window, monkeypatch):
    """Walkthrough step 5: the name typed into the first-outline prompt was recorded but the status bar
    still said "Reader: (not set)"."""
    from liverview.gui import main_window

    assert window.reader_label.text() == "Reader: (not set)"
    monkeypatch.setattr(main_window.QInputDialog, "getText", staticmethod(lambda *args, **kwargs: ("Dr Prompt", True)))
    assert window.reader_name() == "Dr Prompt"
    assert window.reader_label.text() == "Reader: Dr Prompt"


def test_a_coronal_series_reformats_head_up_and_front_left(qtbot, window, crlm_dir, tmp_path):
    """A coronal acquisition (liver MRI often is) showed its sagittal reformat on its side: head on the
    left, front at the top. The stored image rows (head to feet) now run down the reformats."""
    import dataclasses

    axial = open_and_wait(qtbot, window, crlm_dir)
    n = axial.shape[0]
    # The same voxels filed as a coronal stack: rows go to the feet, slices to the back.
    coronal = dataclasses.replace(axial, row_direction=(1.0, 0.0, 0.0), column_direction=(0.0, 0.0, -1.0),
                                  positions_mm=np.array([[0.0, 5.0 * k, 100.0] for k in range(n)]))
    window.viewer.set_volume(coronal)
    _, axial_view, sagittal = window.viewer.views
    assert (axial_view.title, sagittal.title) == ("Axial", "Sagittal")
    assert sagittal.axes.letters() == {"right": "P", "left": "A", "bottom": "I", "top": "S"}
    assert axial_view.axes.letters() == {"right": "L", "left": "R", "bottom": "P", "top": "A"}
    for view in (axial_view, sagittal):
        rows, cols = view.image_shape()
        assert view.current_image().shape == (rows, cols)

        def patient(x, y, view=view):
            return coronal.index_to_patient(*view.scene_to_index(QPointF(*view.pixel_to_view(x, y))))

        top, bottom = patient(cols // 2, 0), patient(cols // 2, rows - 1)
        left, right = patient(0, rows // 2), patient(cols - 1, rows // 2)
        assert np.dot(bottom - top, view.axes.down) > 0 and np.dot(right - left, view.axes.right) > 0
        # The pixel drawn there is the voxel the readout names.
        index = view.scene_to_index(QPointF(*view.pixel_to_view(3, 5)))
        assert view.current_image()[5, 3] == coronal.array[tuple(int(round(v)) for v in index)]
    top, bottom = (coronal.index_to_patient(*sagittal.scene_to_index(QPointF(*sagittal.pixel_to_view(c, r))))
                   for c, r in ((0, 0), (0, sagittal.image_shape()[0] - 1)))
    assert top[2] > bottom[2]  # head up


def test_corner_text_stays_readable_over_white(qtbot):
    """Walkthrough step 4: zoomed in, "Thk 5 mm" sat on the white CT table and could not be read: light
    text with nothing around it. It now has a dark rim."""
    from PySide6.QtWidgets import QWidget

    from liverview.gui.slice_view import _overlay_label

    white = QWidget()
    white.setStyleSheet("background: white;")
    white.setAutoFillBackground(True)
    white.resize(200, 60)
    qtbot.addWidget(white)
    label = _overlay_label(white, Qt.AlignLeft | Qt.AlignTop)
    label.setText("Thk 5 mm")
    label.setGeometry(5, 5, 190, 50)
    white.show()
    qtbot.waitExposed(white)
    image = white.grab().toImage()
    darkest = min(image.pixelColor(x, y).value() for x in range(image.width()) for y in range(image.height()))
    assert darkest < 80


def test_a_series_open_in_another_window_says_so(qtbot, window, crlm_dir, tmp_path, monkeypatch):
    """Walkthrough review: a second window on the same series drew and saved over the first one's outlines
    without a word."""
    import subprocess
    import sys

    import liverview.annotations.store as store_module

    folder = tmp_path / "annotations"
    folder.mkdir()
    monkeypatch.setattr(store_module, "annotation_path", lambda study, series: folder / f"{series}.json")
    from liverview.io import scan_paths

    info = scan_paths(crlm_dir).series[0]
    other = subprocess.Popen([sys.executable, "-c", "print('ready', flush=True); import time; time.sleep(60)"],
                             stdout=subprocess.PIPE)
    try:
        assert other.stdout.readline().strip() == b"ready"  # started: past its exec
        (folder / f"{info.series_uid}.lock").write_text(str(other.pid))
        open_and_wait(qtbot, window, crlm_dir)
        qtbot.waitUntil(lambda: window.store is not None, timeout=10000)
        said = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()
                and w.windowTitle() == "Series open in another window"]
        assert said and f"process {other.pid}" in said[0].text()
        said[0].grab().save(str(tmp_path / "open-elsewhere.png"))
    finally:
        other.kill()
        other.wait()
