"""Classifying lesions in the real window: probabilities, heatmap, accept-as-label, batch cancel, errors."""
from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from liverview.annotations.document import Roi
from liverview.model.bundle_writer import save_bundle
from liverview.model.network import build_network
from liverview.model.transforms import PreprocessConfig

CLASSES = ["benign_cyst", "hemangioma", "hcc", "metastasis"]
#: Made-up test metrics per uncertainty level, each with its own count of right answers.
BY_UNCERTAINTY = [{"uncertainty": "low", "n": 20, "coverage": 0.5, "accuracy": 0.95, "macro_f1": 0.95},
                  {"uncertainty": "moderate", "n": 10, "coverage": 0.25, "accuracy": 0.7, "macro_f1": 0.7},
                  {"uncertainty": "high", "n": 10, "coverage": 0.25, "accuracy": 0.3, "macro_f1": 0.3}]
RIGHT = {"low": "19 of 20 (95%)", "moderate": "7 of 10 (70%)", "high": "3 of 10 (30%)"}


@pytest.fixture(scope="module")
def model_bundle(tmp_path_factory):
    """A small untrained bundle: these tests are about the app's plumbing, not the model's accuracy."""
    torch.manual_seed(5)
    network = build_network("tiny_cnn", 4)
    # Untrained, it answers close to 25 % for every class, which the app rightly shows as no answer:
    # a bias gives one class a clear lead (about 70 %) whatever the input.
    with torch.no_grad():
        network.classifier.bias.copy_(torch.tensor([0.0, 0.0, 2.0, 0.0]))
    return save_bundle(tmp_path_factory.mktemp("model") / "tiny", network,
                       architecture="tiny_cnn", classes=CLASSES, preprocess_config=PreprocessConfig(size=96),
                       metrics={"macro_f1": 0.25, "by_uncertainty": BY_UNCERTAINTY}, name="tiny-test-model",
                       version="0.0.1", training_domain=DEMO_DOMAIN)


#: A domain the test demo study (256 x 256 at 1.56 mm, portal-venous) lies inside.
DEMO_DOMAIN = {"phases": ["portal_venous"], "pixel_mm": [0.6, 1.7], "slice_thickness_mm": [1.0, 6.0]}


@pytest.fixture
def window(open_demo_window, demo_study, model_bundle):
    win = open_demo_window(model__path=str(model_bundle), model__device="cpu")
    assert win.import_annotations(demo_study.ground_truth_path) == 6
    yield win
    win.close()


def test_the_lesion_table_fits_its_panel_with_the_model_answers_shown(qtbot, window):
    """#16 reading comfort: after a model answered (long class names in the Model column), every default
    column still shows inside the panel, without sideways scrolling; the full texts are tooltips."""
    controller = window.classification
    lesion = window.store.document.lesions[0]
    window.jump_to_lesion(lesion.id)
    with qtbot.waitSignal(controller.worker.result, timeout=60000):
        controller.classify_selected()
    # The longest class name, whatever the untrained test model answered.
    window.store.set_ai_result(lesion.id, dataclasses.replace(window.store.document.lesion(lesion.id).ai,
                                                              predicted="hcc"))
    table = window.lesion_panel.table
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).data(Qt.UserRole) == lesion.id)
    qtbot.waitUntil(lambda: table.item(row, headers.index("Model")).text().startswith("Hepatocellular carcinoma"))
    shown = [c for c in range(table.columnCount()) if not table.isColumnHidden(c)]
    right = max(table.columnViewportPosition(c) + table.columnWidth(c) for c in shown)
    assert right <= table.viewport().width() and table.horizontalScrollBar().maximum() == 0
    assert all(table.columnWidth(c) >= 40 for c in shown)
    model = table.item(row, headers.index("Model"))
    assert model.toolTip().startswith("Hepatocellular carcinoma (HCC)")
    assert table.item(row, headers.index("Label")).toolTip() == table.item(row, headers.index("Label")).text()


def test_classify_selected_lesion_shows_probabilities_and_heatmap(qtbot, window):
    controller = window.classification
    lesion = window.store.document.lesions[0]
    window.jump_to_lesion(lesion.id)
    window.lesion_dock.raise_()
    with qtbot.waitSignal(controller.worker.result, timeout=60000) as blocker:
        assert controller.classify_selected() is not None
    assert not controller.dock.visibleRegion().isEmpty()  # the Model tab came to the front
    prediction = blocker.args[1]
    assert prediction.lesion_id == lesion.id
    assert controller.worker.worker_thread_ids and threading.get_ident() not in controller.worker.worker_thread_ids

    stored = window.store.document.lesion(lesion.id).ai
    assert stored is not None and stored.model_id.startswith("tiny-test-model 0.0.1")
    probabilities = controller.panel.probabilities
    assert set(probabilities) == set(CLASSES) and sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert controller.panel.top_label.text().startswith(window.taxonomy.get(stored.predicted).name)
    table = window.lesion_panel.table
    model_column = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())].index("Model")
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).data(Qt.UserRole) == lesion.id)
    assert table.item(row, model_column).text().startswith(window.taxonomy.get(stored.predicted).name)  # words, not ids
    assert "tiny-test-model 0.0.1" in controller.status_label.text() and "CPU" in controller.status_label.text()
    assert "not for diagnosis" in controller.panel.note.text()
    # Beside the uncertainty, how often this model was right at that level on its test lesions ...
    level = stored.uncertainty
    assert controller.panel.uncertainty_label.text().startswith(f"Uncertainty: {level}")
    assert controller.panel.measured_label.text() == (f"On its test lesions, answers shown with {level} "
                                                      f"uncertainty were right in {RIGHT[level]}.")
    # ... but not for an answer another model gave.
    controller.panel.show_result(dataclasses.replace(stored, model_id="another-model 9.9"))
    assert controller.panel.uncertainty_label.text() and controller.panel.measured_label.text() == ""
    assert controller.panel.measured_label.isHidden()
    # Its phase reader's answer: the reader's own record on lesions read on the same phases.
    controller.panel.reader_by_uncertainty = {"arterial + portal_venous": {level: {"uncertainty": level, "n": 50,
                                                                                  "accuracy": 0.96}}}
    read_both = dataclasses.replace(stored, model_id=f"{controller.panel.model_id} + phase reader",
                                    phases_read=["arterial", "portal_venous"])
    controller.panel.show_result(read_both)
    assert controller.panel.measured_label.text() == (f"On its test lesions read on these phases, answers shown with "
                                                      f"{level} uncertainty were right in 48 of 50 (96%).")
    controller.panel.show_result(dataclasses.replace(read_both, phases_read=["arterial"]))
    assert controller.panel.measured_label.text() == ""
    # A reader measured on simulated lesions says so, whatever its CNN was tested on.
    controller.panel.reader_simulated = True
    controller.panel.show_result(read_both)
    assert controller.panel.measured_label.text().startswith("On its simulated test lesions read on these phases")
    controller.panel.reader_simulated = False
    controller.panel.show_result(stored)

    # The heatmap is on screen, on the slice the lesion is shown on, and fades with the slider.
    view = window.viewer.views[0]
    qtbot.waitUntil(controller.overlay.is_visible, timeout=30000)
    assert controller.overlay.heatmap.slice_index == view.slice_index
    controller.panel.opacity_slider.setValue(20)
    assert controller.overlay.item.opacity() == pytest.approx(0.2)
    controller.panel.heatmap_check.setChecked(False)
    assert not controller.overlay.is_visible()
    controller.panel.heatmap_check.setChecked(True)
    assert controller.overlay.is_visible()

    # It follows the slice through the lesion: a neighbouring slice gets its own map.
    slices = sorted({roi.slice_index for roi in lesion.rois})
    other = next(z for z in slices if z != view.slice_index)
    window.viewer.set_slice(view, other)
    qtbot.waitUntil(lambda: controller.overlay.is_visible() and controller.overlay.heatmap.slice_index == other,
                    timeout=30000)
    # Off the lesion there is nothing to show.
    window.viewer.set_slice(view, max(slices) + 3)
    assert not controller.overlay.is_visible()

    # With its macro-F1 on those phases, for small and larger lesions apart, as the loaded model gives it.
    scores = {"arterial + portal_venous": {"macro_f1": 0.9, "by_size": {"under 20 mm": {"n": 7, "macro_f1": 0.8}}}}
    rows = {"arterial + portal_venous": [{"uncertainty": level, "n": 50, "accuracy": 0.96}]}
    controller._on_model_loaded(dataclasses.replace(controller.model, reader_scores=scores, reader_by_uncertainty=rows))
    controller.panel.show_result(read_both)
    assert controller.panel.measured_label.text().endswith("right in 48 of 50 (96%). At every uncertainty together, "
                                                           "its macro-F1 on them: 0.900 (under 20 mm, 7 lesions: 0.800).")
    # Shown for the selected lesion, the score quoted is that of its own size band.
    from liverview.annotations.measurements import slice_masks
    from liverview.imaging.measure import mask_long_axis_mm
    from liverview.model.phase_reader import size_band

    volume = window.session.volume
    size = mask_long_axis_mm(slice_masks(volume, lesion)[stored.slice_index],
                             (float(volume.spacing_mm[1]), float(volume.spacing_mm[2])))
    scores["arterial + portal_venous"]["by_size"]["20 mm and over"] = {"n": 9, "macro_f1": 0.95}
    controller._on_model_loaded(dataclasses.replace(controller.model, reader_scores=scores, reader_by_uncertainty=rows))
    window.store.document.lesion(lesion.id).ai = read_both
    controller.refresh()
    band = size_band(size)
    expected = {"under 20 mm": "0.800 (7 lesions)", "20 mm and over": "0.950 (9 lesions)"}[band]
    assert controller.panel.measured_label.text().endswith(
        f"its macro-F1 on them: 0.900; on those {band}, as this one is ({math.floor(size * 10) / 10:.1f} mm): {expected}.")


def test_the_heatmap_lies_on_the_pixels_the_network_read(qtbot, window):
    """A map with one cell per slice pixel, its cells' centres on the centres of pixels 30..69 across and
    40..79 down (where `Heatmap.cell_centres_px` puts them), is drawn over exactly those pixels."""
    from PySide6.QtCore import QRectF

    from liverview.model.classify import Heatmap

    view = window.viewer.views[0]
    spacing = (float(view.volume.spacing_mm[1]), float(view.volume.spacing_mm[2]))
    assert spacing[0] == spacing[1]
    cam = np.linspace(0.0, 1.0, 40 * 40, dtype=np.float32).reshape(40, 40)
    overlay = window.classification.overlay
    overlay.set_heatmap(Heatmap(view.slice_index, cam, (59.5, 49.5), 40 * spacing[0], spacing, "hcc"))
    heat = overlay.heatmap
    assert (heat.cell_centres_px()[1][0], heat.cell_centres_px()[0][0]) == (30.0, 40.0)
    drawn = overlay.item.mapRectToView(overlay.item.boundingRect())
    pixels = view.image.mapRectToView(QRectF(30, 40, 40, 40))  # pixels 30..69 across, 40..79 down
    assert [drawn.left(), drawn.top(), drawn.width(), drawn.height()] == pytest.approx(
        [pixels.left(), pixels.top(), pixels.width(), pixels.height()])


def test_an_outdated_answer_is_said_in_words_and_does_not_widen_the_panel(qtbot, window):
    """Walkthrough review: after an outline edit, the one-line notice that the answer is outdated forced
    the Model dock from 322 to 960 px and pushed the viewer aside, and the old crop stayed painted over the
    Classify button. The notice wraps and names the class in words; the crop goes."""
    controller = window.classification
    imported = window.store.document.lesions[0].rois[0]
    lesion = window.store.add_lesion(Roi(imported.slice_index, list(imported.points_xy)))  # our own, to edit
    window.jump_to_lesion(lesion.id)
    with qtbot.waitSignal(controller.worker.result, timeout=60000):
        controller.classify_selected()
    answered = window.store.document.lesion(lesion.id).ai
    window.store.set_ai_result(lesion.id, dataclasses.replace(answered, predicted="hcc"))
    qtbot.waitUntil(lambda: controller.panel.top_label.text().startswith("Hepatocellular carcinoma"))
    width_before = controller.panel.minimumSizeHint().width()
    crops = list(controller.panel.crop_labels)
    assert crops
    qtbot.waitUntil(lambda: all(crop.isVisibleTo(controller.panel) for crop in crops))

    def gone(widget) -> bool:
        try:
            return widget.isHidden()
        except RuntimeError:  # already deleted
            return True

    window.store.copy_roi_to_slice(lesion.id, lesion.rois[0].id, imported.slice_index + 1)
    qtbot.waitUntil(lambda: "outdated" in controller.panel.top_label.text())
    assert "(Hepatocellular carcinoma (HCC))" in controller.panel.top_label.text()
    assert controller.panel.minimumSizeHint().width() <= width_before
    # The outdated answer's crop is gone at once, not left painted over the buttons until deleted.
    assert all(gone(crop) for crop in crops)


def own_copy(window, truth):
    """The reader's own lesion with `truth`'s outlines (a lesion of another reader cannot take a label)."""
    first, *rest = truth.rois
    lesion = window.store.add_lesion(Roi(first.slice_index, first.points_xy, sop_instance_uid=first.sop_instance_uid))
    for roi in rest:
        window.store.add_roi(lesion.id, Roi(roi.slice_index, roi.points_xy, sop_instance_uid=roi.sop_instance_uid))
    return window.store.document.lesion(lesion.id)


def test_accept_as_label_records_the_ai_suggestion(qtbot, window):
    controller = window.classification
    truth = window.store.document.lesions[1]
    lesion = own_copy(window, truth)
    assert lesion.reader == "Dr Ada" != truth.reader
    window.jump_to_lesion(lesion.id)
    with qtbot.waitSignal(controller.worker.result, timeout=60000):
        controller.classify_selected()
    qtbot.waitUntil(lambda: controller.panel.accept_button.isEnabled(), timeout=5000)
    controller.panel.accept_button.click()
    accepted = window.store.document.lesion(lesion.id)
    assert accepted.label == accepted.ai.predicted
    assert accepted.label_source == "ai-accepted" and accepted.ai.accepted_by == "Dr Ada"
    # The selected lesion's line says so (the table's "(AI)" mark is often elided in its narrow column).
    assert "(the model's suggestion, accepted by Dr Ada)" in window.lesion_panel.selected_label.text()
    window.store.flush()
    saved = window.store.path.read_text()
    assert '"ai-accepted"' in saved and '"accepted_by": "Dr Ada"' in saved

    # The ground truth's lesion is another reader's: its model answer is never taken as its label.
    window.jump_to_lesion(truth.id)
    with qtbot.waitSignal(controller.worker.result, timeout=60000):
        controller.classify_selected()
    label = truth.label
    # The button says so before it is pressed: it looked usable and did nothing but a status message.
    assert not controller.panel.accept_button.isEnabled()
    assert "stays their opinion" in controller.panel.accept_button.toolTip()
    controller.accept_label()
    assert window.store.document.lesion(truth.id).label == label
    assert window.store.document.lesion(truth.id).label_source != "ai-accepted"


def test_batch_classifies_every_lesion_and_can_be_cancelled(qtbot, window):
    controller = window.classification
    with qtbot.waitSignal(controller.worker.batch_finished, timeout=120000) as blocker:
        controller.classify_all()
    _job, classified, errors, cancelled = blocker.args
    assert classified == 6 and not errors and not cancelled
    assert all(lesion.ai is not None for lesion in window.store.document.lesions)

    for lesion in window.store.document.lesions:
        window.store.set_ai_result(lesion.id, None)
    with qtbot.waitSignal(controller.worker.batch_finished, timeout=120000) as blocker:
        controller.classify_all()
        controller.panel.cancel_button.click()
    _job, classified, errors, cancelled = blocker.args
    assert cancelled and classified < 6
    assert sum(lesion.ai is not None for lesion in window.store.document.lesions) == classified


def test_errors_reach_the_user_and_the_app_keeps_working(qtbot, window, tmp_path, model_bundle):
    controller = window.classification
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{not json")
    with qtbot.waitSignal(controller.worker.model_failed, timeout=60000):
        controller.load_model(broken)
    assert "broken" in controller.last_error

    corrupted = tmp_path / "corrupted"
    corrupted.mkdir()
    for item in model_bundle.iterdir():
        (corrupted / item.name).write_bytes(item.read_bytes())
    weights = corrupted / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with qtbot.waitSignal(controller.worker.model_failed, timeout=60000):
        controller.load_model(corrupted)
    assert "corrupted or was replaced" in controller.last_error

    # An outline entirely outside the image: a clear message, no crash.
    from liverview.annotations.document import Roi

    lesion = window.store.add_lesion(Roi(3, [(-90.0, -90.0), (-60.0, -90.0), (-60.0, -60.0)]))
    window.annotator.select(lesion.id)
    with qtbot.waitSignal(controller.worker.job_failed, timeout=60000):
        controller.classify_selected()
    assert "no outline inside the image" in controller.last_error

    # The worker still serves: the good model loads and classifies.
    with qtbot.waitSignal(controller.worker.model_loaded, timeout=60000):
        controller.load_model(model_bundle)
    window.jump_to_lesion(window.store.document.lesions[0].id)
    with qtbot.waitSignal(controller.worker.result, timeout=60000):
        controller.classify_selected()


def test_opening_the_window_does_not_import_torch():
    code = ("import sys; from liverview.gui.main_window import MainWindow; "
            "from liverview.gui import classification, model_worker, prediction_panel, heatmap_overlay; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_an_answer_outside_the_training_data_says_so_instead_of_an_uncertainty(qtbot, tmp_path):
    from liverview.annotations.document import AIResult
    from liverview.gui.prediction_panel import PredictionPanel

    panel = PredictionPanel()
    qtbot.addWidget(panel)
    panel.set_model("tiny", CLASSES, CLASSES, model_id="m", by_uncertainty=BY_UNCERTAINTY, simulated=True)
    reasons = ["the image noise is 25 HU; the training images had 7-20 HU", "this series is arterial"]
    result = AIResult(model_id="m", probabilities={c: 0.01 for c in CLASSES} | {"hcc": 0.97}, predicted="hcc",
                      time="t", uncertainty="outside training data", entropy=0.05, phases_read=["arterial"],
                      outside_training=reasons)
    panel.show_result(result)
    # The headline is the warning, not a confident class and percentage; the answer stays visible below it.
    assert panel.top_label.text() == "Outside the model's training data" and "97%" not in panel.top_label.text()
    # Without its percentage, in the line and on the bars: a ">99%" by the grey bar still read as sure.
    assert panel.uncertainty_label.text() == "It would answer hcc, but its percentages mean nothing here: do not rely on it"
    assert panel.value_texts == []
    assert panel.plot.getAxis("bottom")._tickLevels == [[]]  # no 25/50/75 % scale to read the bar against
    # Units and acronyms in the reasons keep their case.
    assert panel.measured_label.text() == ("The image noise is 25 HU; the training images had 7-20 HU; "
                                           "this series is arterial.")
    # No bar is drawn in the colour of a chosen class.
    assert len({brush.color().name() for brush in panel.bars.opts["brushes"]}) == 1
    panel.resize(420, 640)
    panel.grab().save(str(tmp_path / "outside.png"))
    panel.show_result(dataclasses.replace(result, outside_training=[], uncertainty="low"))
    assert panel.plot.getAxis("bottom")._tickLevels[0][1] == (0.25, "25%")  # an ordinary answer keeps its scale


@pytest.fixture
def panel(qtbot):
    """A Model panel of the four classes (ids as names) for the model "m", on its own."""
    from liverview.gui.prediction_panel import PredictionPanel

    panel = PredictionPanel()
    qtbot.addWidget(panel)
    panel.set_model("tiny", CLASSES, CLASSES, model_id="m")
    return panel


def refuse_answer(qtbot, window, message: str, **changes):
    """Classify the first lesion, change its answer by `changes`, and check that it cannot be accepted
    (button disabled, the action refused with `message` in the status bar); returns the changed answer."""
    controller = window.classification
    lesion = own_copy(window, window.store.document.lesions[0])
    window.jump_to_lesion(lesion.id)
    with qtbot.waitSignal(controller.worker.result, timeout=60000):
        controller.classify_selected()
    qtbot.waitUntil(lambda: controller.panel.accept_button.isEnabled())
    answer = dataclasses.replace(window.store.document.lesion(lesion.id).ai, **changes)
    window.store.set_ai_result(lesion.id, answer)
    controller.refresh()  # as _on_result does once it has stored an answer
    assert not controller.panel.accept_button.isEnabled()
    label_before = window.store.document.lesion(lesion.id).label
    controller.accept_label()
    assert window.store.document.lesion(lesion.id).label == label_before
    assert message in window.statusBar().currentMessage()
    return answer


def test_an_answer_outside_the_training_data_cannot_be_accepted_as_a_label(qtbot, window):
    refuse_answer(qtbot, window, "outside", uncertainty="outside training data",
                  outside_training=["this series is arterial"])


def test_the_answers_time_is_the_local_date_and_minute(panel):
    """The panel showed the stored stamp as is: "2026-12-07T11:16:52+00:00"."""
    from datetime import datetime, timezone

    from liverview.annotations.document import AIResult

    stamp = datetime(2026, 12, 7, 11, 16, 52, tzinfo=timezone.utc)
    panel.show_result(AIResult(model_id="m", probabilities={c: 0.1 for c in CLASSES} | {"hcc": 0.7}, predicted="hcc",
                               time=stamp.isoformat(), uncertainty="low", entropy=0.1))
    assert stamp.astimezone().strftime("%Y-%m-%d %H:%M") in panel.detail_label.text()
    assert "+00:00" not in panel.detail_label.text()


def test_an_answer_where_no_class_leads_is_no_suggestion(qtbot, window, panel, tmp_path):
    """A model trained on three lesions answered 25 % for every class; "Metastasis 25%" was the headline and
    "Accept as label" recorded it as the reader's accepted AI suggestion."""
    from liverview.annotations.document import AIResult

    tie = AIResult(model_id="m", probabilities={c: 0.25 for c in CLASSES}, predicted="metastasis", time="t",
                   uncertainty="high", entropy=1.0)
    panel.show_result(tie)
    assert panel.top_label.text() == "No class leads" and "25%" not in panel.top_label.text()
    assert panel.uncertainty_label.text() == "The model has not chosen: label this lesion yourself"
    assert panel.measured_label.text() == "benign_cyst, hemangioma, hcc and metastasis lie within 5% of each other."
    assert len({brush.color().name() for brush in panel.bars.opts["brushes"]}) == 1
    panel.resize(420, 640)
    panel.grab().save(str(tmp_path / "no-lead.png"))
    # Two classes close together are a tie too; a clear lead is a suggestion.
    close = dataclasses.replace(tie, probabilities={"benign_cyst": 0.02, "hemangioma": 0.04, "hcc": 0.46,
                                                    "metastasis": 0.48})
    assert "no class leads" in close.refusal()
    assert dataclasses.replace(tie, probabilities={**close.probabilities, "hcc": 0.30, "metastasis": 0.64}).refusal() is None

    answer = refuse_answer(qtbot, window, "No class leads", probabilities=dict.fromkeys(CLASSES, 0.25))
    # The lesion table says the same as the panel, not "Metastasis 25%".
    table = window.lesion_panel.table
    model_column = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())].index("Model")
    answered = [table.item(row, model_column).text() for row in range(table.rowCount())]
    assert "no class leads" in answered and not any("25%" in text for text in answered)
    first = window.store.document.lesions[0]
    own = window.store.add_lesion(Roi(first.rois[0].slice_index, first.rois[0].points_xy))
    window.store.set_ai_result(own.id, dataclasses.replace(answer, outline=window.store.document.lesion(own.id).outline_key()))
    with pytest.raises(ValueError, match="no class leads"):
        window.store.accept_ai_label(own.id)
    assert window.store.document.lesion(own.id).label_source != "ai-accepted"


def test_a_heatmap_that_points_elsewhere_is_not_presented_as_an_explanation(panel):
    from liverview.annotations.document import AIResult

    result = AIResult(model_id="m", probabilities={c: 0.25 for c in CLASSES}, predicted="hcc", time="t",
                      uncertainty="low", heatmap_inside=0.31)
    panel.show_result(result)
    assert "lies mostly outside the outline (31% within 5 mm of it)" in panel.detail_label.text()
    panel.show_result(AIResult.from_dict({**result.to_dict(), "heatmap_inside": 0.82}))
    assert "82% of the heatmap lies within 5 mm of the outline" in panel.detail_label.text()


def test_the_panel_shows_what_the_network_read_of_each_phase(qtbot, tmp_path):
    from liverview.gui.prediction_panel import PredictionPanel

    panel = PredictionPanel()
    qtbot.addWidget(panel)
    phases = ["non_contrast", "arterial", "portal_venous", "delayed"]
    yy, xx = np.mgrid[0:64, 0:64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2) < 15 ** 2
    crops = {p: np.where(disc, 60 + 50 * i, 150).astype(np.uint8) for i, p in enumerate(phases)}
    cam = np.exp(-(((yy - 32) ** 2 + (xx - 32) ** 2) / 200.0)).astype(np.float32)
    panel.show_phase_crops(crops, cam=cam)
    panel.resize(420, 700)
    panel.show()
    captions = [w.findChildren(QLabel)[1].text() for w in panel.crop_labels]
    assert captions == ["non-contrast", "arterial", "portal-venous", "delayed"]
    image = panel.crop_labels[1].findChildren(QLabel)[0].pixmap().toImage()
    centre, corner = image.pixelColor(44, 44), image.pixelColor(2, 2)
    assert centre.red() > centre.blue() and abs(corner.red() - corner.blue()) < 10  # heat on the lesion only
    panel.grab().save(str(tmp_path / "crops.png"))
    # A multiphase model's own map per phase replaces the combined one on that phase's crop.
    corner_heat = np.zeros((64, 64), np.float32)
    corner_heat[:12, :12] = 1.0
    panel.show_phase_crops(crops, {"arterial": corner_heat}, cam)
    arterial = panel.crop_labels[1].findChildren(QLabel)[0].pixmap().toImage()
    delayed = panel.crop_labels[3].findChildren(QLabel)[0].pixmap().toImage()
    assert arterial.pixelColor(2, 2).red() > arterial.pixelColor(2, 2).blue() + 10
    assert abs(delayed.pixelColor(2, 2).red() - delayed.pixelColor(2, 2).blue()) < 10
    # The phase reader: the CNN's map on its phase only, and under each crop the HU it measured.
    measured = {p: {"lesion_hu": 40.0 + 30 * i, "liver_hu": 100.0 + i} for i, p in enumerate(phases)}
    panel.show_phase_crops(crops, {"portal_venous": cam}, None, measured)
    captions = [w.findChildren(QLabel)[1].text() for w in panel.crop_labels]
    assert captions[1] == "arterial\nL 70 · liver 101" and captions[2] == "portal-venous\nL 100 · liver 102"
    venous = panel.crop_labels[2].findChildren(QLabel)[0].pixmap().toImage()
    arterial = panel.crop_labels[1].findChildren(QLabel)[0].pixmap().toImage()
    assert venous.pixelColor(44, 44).red() > venous.pixelColor(44, 44).blue() + 10
    assert abs(arterial.pixelColor(44, 44).red() - arterial.pixelColor(44, 44).blue()) < 10
    panel.show_phase_crops({})
    assert panel.crop_labels == []


def test_a_model_without_held_out_test_lesions_says_it_is_untested(qtbot, window, tmp_path):
    """A model trained on three lesions, with no test split, loaded with no word that nobody knows how good
    it is (the bundled model's line gives its test macro-F1)."""
    controller = window.classification
    assert "\nTest macro-F1 0.25" in controller.panel.model_label.text()
    untested = save_bundle(tmp_path / "untested", build_network("tiny_cnn", 4), architecture="tiny_cnn",
                           classes=CLASSES, preprocess_config=PreprocessConfig(size=96), name="my-model",
                           version="0.1.0", training_domain=DEMO_DOMAIN)
    with qtbot.waitSignal(controller.worker.model_loaded, timeout=60000):
        controller.load_model(untested)
    assert controller.panel.model_label.text().startswith("my-model 0.1.0 on CPU\nUntested: no held-out test lesions")
    assert "was not tested on held-out lesions" in window.statusBar().currentMessage()


def test_percentages_never_round_to_certainty():
    """0.9992 was shown as "HCC 100%" with the other classes at "0%", and 902 of 906 as "(100%)": the panel
    must not claim certainty the model does not have; a share is rounded, not cut (50 of 74 is 68 %)."""
    from liverview.model.uncertainty import format_percent

    assert format_percent(0.9992) == ">99%" and format_percent(0.0004) == "<1%"
    assert format_percent(902 / 906) == ">99%" and format_percent(50 / 74) == "68%"
    assert format_percent(1.0) == "100%" and format_percent(0.0) == "0%" and format_percent(0.787) == "79%"
    from liverview.annotations.document import AIResult
    from liverview.annotations.labels import LabelTaxonomy
    from liverview.gui.lesion_panel import describe_answer

    answer = AIResult("m", {"hcc": 0.9992, "metastasis": 0.0008}, "hcc", "2026-12-07T00:00:00+00:00")
    assert describe_answer(answer, LabelTaxonomy()).endswith(">99%")  # the table's Model column too
