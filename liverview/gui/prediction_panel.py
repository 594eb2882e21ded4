"""The model's opinion on the selected lesion: probability bars, top class, uncertainty, heatmap controls."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (QCheckBox, QGridLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton, QSlider,
                               QVBoxLayout, QWidget)

from liverview.annotations.document import MIN_LEAD, AIResult
from liverview.gui.heatmap_overlay import heatmap_lookup_table
from liverview.model.phase_reader import answer_id, format_subset_score, subset_name
from liverview.model.uncertainty import HEATMAP_INSIDE_MIN, describe_measured_level, format_percent

RESEARCH_NOTE = "Research use only — not for diagnosis. The model's opinion is a suggestion for the reader to check."
BAR_COLOR = (90, 150, 220)
TOP_COLOR = (240, 176, 64)
UNRELIABLE_COLOR = (150, 150, 150)
#: Bars longer than this show their percentage inside (after them, "100%" would run off the plot).
LABEL_INSIDE_FROM = 0.75
UNCERTAINTY_COLORS = {"low": "#8fd18f", "moderate": "#f0b040", "high": "#ef6b5b", "outside training data": "#ef6b5b"}


def legend_pixmap(width: int = 160, height: int = 12) -> QPixmap:
    table = heatmap_lookup_table(width)
    rgba = np.repeat(table[None, :, :], height, axis=0).copy()
    rgba[..., 3] = 255  # the legend shows the colours; their fading is explained by the opacity slider
    image = QImage(rgba.data, width, height, width * 4, QImage.Format_RGBA8888)
    return QPixmap.fromImage(image.copy())


CROP_PX = 88


def crop_pixmap(crop: np.ndarray, cam: np.ndarray | None, size: int = CROP_PX) -> QPixmap:
    """A phase's crop (uint8) as a small image, the heatmap blended over it as in the axial view."""
    grey = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    if cam is not None:
        table = heatmap_lookup_table(256)
        heat = cv2.resize(np.clip(cam, 0.0, 1.0).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        colours = table[(heat * 255).astype(np.uint8)]
        alpha = colours[..., 3:4].astype(np.float32) / 255.0 * 0.6
        rgb = rgb * (1.0 - alpha) + colours[..., :3].astype(np.float32) * alpha
    image = np.ascontiguousarray(rgb.clip(0, 255).astype(np.uint8))
    qimage = QImage(image.data, size, size, size * 3, QImage.Format_RGB888)
    return QPixmap.fromImage(qimage.copy())


def _local_time(stamp: str) -> str:
    """An answer's ISO time stamp (stored in UTC) as this computer's local date and minute."""
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return stamp


#: The probability axis' marks.
PERCENT_TICKS = [[(v, f"{v:.0%}") for v in (0, 0.25, 0.5, 0.75, 1.0)]]
#: What Accept as label does, shown while it can.
ACCEPT_TIP = "Take the model's top class as this lesion's label (recorded as AI-suggested)"


class PredictionPanel(QWidget):
    classify_requested = Signal()
    classify_all_requested = Signal()
    cancel_requested = Signal()
    accept_requested = Signal()
    heatmap_toggled = Signal(bool)
    opacity_changed = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.classes: list[str] = []
        self.class_names: list[str] = []
        self.probabilities: dict[str, float] = {}
        self.model_id = ""
        self.by_uncertainty: dict[str, dict] = {}
        self.reader_by_uncertainty: dict[str, dict[str, dict]] = {}
        self.reader_scores: dict[str, dict] = {}
        self.simulated = False
        self.reader_simulated = False
        #: The number a reader sees for a slice index (the viewer's reading order); set by the host.
        self.slice_number: Callable[[int], int] = lambda index: index + 1
        self.model_text = "No model loaded"
        self.phase_text = ""
        self.model_label = QLabel(self.model_text)
        self.model_label.setTextFormat(Qt.PlainText)
        self.model_label.setWordWrap(True)
        self.note = QLabel(RESEARCH_NOTE)
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #f0b040; font-size: 9pt;")

        self.classify_button = QPushButton("Classify (K)")
        self.classify_button.setToolTip("Classify the selected lesion on its largest outline")
        self.all_button = QPushButton("Classify all (Shift+K)")
        self.cancel_button = QPushButton("Cancel")
        self.accept_button = QPushButton("Accept as label")
        self.accept_button.setToolTip(ACCEPT_TIP)
        self.classify_button.clicked.connect(self.classify_requested)
        self.all_button.clicked.connect(self.classify_all_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.accept_button.clicked.connect(self.accept_requested)
        self.batch_progress = QProgressBar()
        self.batch_progress.setTextVisible(True)
        for widget in (self.batch_progress, self.cancel_button):
            widget.hide()

        self.plot = pg.PlotWidget()
        self.plot.setBackground(None)
        self.plot.setMouseEnabled(False, False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.setXRange(0, 1, padding=0.02)
        self.plot.getAxis("bottom").setTicks(PERCENT_TICKS)
        self.plot.setMinimumHeight(134)  # one text line less than before the phase line came, same smallest window
        self.plot.setMaximumHeight(230)
        self.plot.invertY(True)  # classes top to bottom in the taxonomy's order
        self.plot.showGrid(x=True, y=False, alpha=0.2)
        self.bars = pg.BarGraphItem(x0=[], y=[], height=0.6, width=[])
        self.plot.addItem(self.bars)
        self.value_texts: list[pg.TextItem] = []

        self.top_label = QLabel("")
        self.top_label.setTextFormat(Qt.PlainText)
        self.top_label.setStyleSheet("font-size: 12pt; font-weight: 600;")
        # Wrapped: a long headline ("The outline changed after …") would otherwise widen the whole dock.
        self.top_label.setWordWrap(True)
        self.uncertainty_label = QLabel("")
        self.uncertainty_label.setTextFormat(Qt.PlainText)
        self.uncertainty_label.setWordWrap(True)
        self.measured_label = QLabel("")
        self.measured_label.setTextFormat(Qt.PlainText)
        self.measured_label.setStyleSheet("color: #9a9a9a; font-size: 9pt;")
        self.measured_label.setWordWrap(True)
        self.crops_row = QHBoxLayout()
        self.crop_labels: list[QWidget] = []
        self.detail_label = QLabel("")
        self.detail_label.setTextFormat(Qt.PlainText)
        self.detail_label.setStyleSheet("color: #9a9a9a; font-size: 9pt;")
        self.detail_label.setWordWrap(True)

        self.heatmap_check = QCheckBox("Heatmap (Grad-CAM)")
        self.heatmap_check.setChecked(True)
        self.heatmap_check.toggled.connect(self.heatmap_toggled)
        self.opacity_slider = QSlider(Qt.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(60)
        self.opacity_slider.setToolTip("Heatmap opacity")
        self.opacity_slider.valueChanged.connect(lambda v: self.opacity_changed.emit(v / 100.0))
        legend = QLabel()
        legend.setPixmap(legend_pixmap())
        # Stretched over its column, so that "high attention" stands at its end however wide the panel.
        legend.setScaledContents(True)
        legend.setFixedHeight(legend.pixmap().height())
        legend.setMinimumWidth(60)
        legend.setToolTip("Where the network looked for its top class: dark = little, bright = most")

        buttons = QHBoxLayout()
        buttons.addWidget(self.classify_button)
        buttons.addWidget(self.all_button)
        batch = QHBoxLayout()
        batch.addWidget(self.batch_progress, 1)
        batch.addWidget(self.cancel_button)
        heat = QGridLayout()
        heat.addWidget(self.heatmap_check, 0, 0, 1, 3)
        heat.addWidget(QLabel("Opacity"), 1, 0)
        heat.addWidget(self.opacity_slider, 1, 1, 1, 2)
        heat.addWidget(QLabel("low"), 2, 0)
        heat.addWidget(legend, 2, 1)
        heat.addWidget(QLabel("high attention"), 2, 2)
        heat.setColumnStretch(1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.model_label)
        layout.addLayout(buttons)
        layout.addLayout(batch)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.top_label)
        uncertainty = QVBoxLayout()
        uncertainty.setSpacing(2)
        uncertainty.addWidget(self.uncertainty_label)
        uncertainty.addWidget(self.measured_label)
        layout.addLayout(uncertainty)
        layout.addLayout(self.crops_row)
        layout.addWidget(self.accept_button)
        layout.addWidget(self.detail_label)
        layout.addLayout(heat)
        layout.addWidget(self.note)
        self.show_result(None)
        self.set_enabled(model=False, lesion=False)

    def set_model(self, text: str, classes: list[str], class_names: list[str], model_id: str = "",
                  by_uncertainty: list[dict] | None = None, simulated: bool = False,
                  reader_by_uncertainty: dict[str, list[dict]] | None = None, reader_simulated: bool = False,
                  reader_scores: dict[str, dict] | None = None) -> None:
        """`by_uncertainty`: the model's test metrics per uncertainty level, shown with its own answers;
        `reader_by_uncertainty`: its phase reader's, per subset of phases, shown with the reader's answers
        (measured on simulated lesions only when `reader_simulated`), with `reader_scores` (its macro-F1 per
        subset, and per size band: `phase_reader.reader_subset_scores`)."""
        self.model_text = text
        self._show_model_line()
        self.model_id = model_id
        self.by_uncertainty = {row["uncertainty"]: row for row in by_uncertainty or []}
        self.reader_by_uncertainty = {subset: {row["uncertainty"]: row for row in rows}
                                      for subset, rows in (reader_by_uncertainty or {}).items()}
        self.reader_scores = dict(reader_scores or {})
        self.simulated = simulated
        self.reader_simulated = reader_simulated
        self.classes, self.class_names = list(classes), list(class_names)
        self.plot.getAxis("left").setTicks([[(i, name) for i, name in enumerate(self.class_names)]])
        self.plot.setYRange(-0.6, len(self.classes) - 0.4, padding=0)

    def set_phase(self, text: str, evidence: str = "") -> None:
        """The open series' contrast phase (on the model's line, so the panel grows no taller) and, as a
        tooltip, how it was decided."""
        self.phase_text = text
        self.model_label.setToolTip(evidence)
        self._show_model_line()

    def _show_model_line(self) -> None:
        self.model_label.setText(f"{self.model_text}\n{self.phase_text}" if self.phase_text else self.model_text)

    def set_enabled(self, model: bool, lesion: bool, has_result: bool = False, busy: bool = False,
                    not_yours: str = "") -> None:
        """`not_yours`: why the selected lesion's label is not this reader's to set ("" when it is)."""
        self.classify_button.setEnabled(model and lesion)
        self.all_button.setEnabled(model and not busy)
        self.accept_button.setEnabled(lesion and has_result and not not_yours)
        self.accept_button.setToolTip(not_yours or ACCEPT_TIP)

    def show_result(self, result: AIResult | None, pending: str = "", long_axis_mm: float | None = None) -> None:
        """Bars for `result` (None: empty, with `pending` as the explanation); `long_axis_mm`: the lesion's
        outline on the slice the model read, for the phase reader's score on lesions of its size."""
        for text in self.value_texts:
            self.plot.removeItem(text)
        self.value_texts = []
        if result is None or not self.classes:
            self.probabilities = {}
            self.bars.setOpts(x0=[], y=[], width=[], brushes=[])
            self.top_label.setText(pending)
            self.uncertainty_label.setText("")
            self._show_measured("")
            self.detail_label.setText("")
            return
        self.probabilities = {c: float(result.probabilities.get(c, 0.0)) for c in self.classes}
        values = [self.probabilities[c] for c in self.classes]
        # An answer outside the training data, or one where no class leads, picks no class: no bar in
        # the chosen class's colour.
        no_choice = result.refusal() is not None
        top = UNRELIABLE_COLOR if no_choice else TOP_COLOR
        others = UNRELIABLE_COLOR if no_choice else BAR_COLOR
        brushes = [pg.mkBrush(*(top if c == result.predicted else others)) for c in self.classes]
        self.bars.setOpts(x0=[0] * len(values), y=list(range(len(values))), width=values, brushes=brushes)
        # Outside the training data the bars keep their lengths but no scale: an axis marked 25/50/75 %
        # still read the grey bar as "about 90 %".
        self.plot.getAxis("bottom").setTicks([[]] if result.outside_training else PERCENT_TICKS)
        for i, value in enumerate(values):
            if result.outside_training:
                # A network's percentages on inputs unlike its training data are not calibrated: a ">99%"
                # next to the grey bar still read as a sure answer. The bars' lengths stay.
                break
            # A long bar carries its value inside its end, in dark text on the bar; a short one after it.
            inside = value > LABEL_INSIDE_FROM
            text = pg.TextItem(format_percent(value), anchor=(1, 0.5) if inside else (0, 0.5),
                               color=(20, 20, 20) if inside else (230, 230, 230))
            text.setPos(value - 0.01 if inside else value + 0.02, i)
            self.plot.addItem(text)
            self.value_texts.append(text)
        name = self.class_names[self.classes.index(result.predicted)] if result.predicted in self.classes \
            else result.predicted
        share = format_percent(self.probabilities.get(result.predicted, 0.0))
        level = result.uncertainty or ""
        if result.outside_training:
            # The warning is the headline: a class and a percentage there would sound sure.
            self.top_label.setText("Outside the model's training data")
            self.uncertainty_label.setText(f"It would answer {name}, but its percentages mean nothing here: "
                                           "do not rely on it")
            reasons = "; ".join(result.outside_training)
            self._show_measured(reasons[:1].upper() + reasons[1:] + ".")
        elif no_choice:  # no class leads
            tied = [self.class_names[i] for i, c in enumerate(self.classes)
                    if self.probabilities[c] >= self.probabilities.get(result.predicted, 0.0) - MIN_LEAD]
            self.top_label.setText("No class leads")
            self.uncertainty_label.setText("The model has not chosen: label this lesion yourself")
            self._show_measured(f"{', '.join(tied[:-1])} and {tied[-1]} lie within {MIN_LEAD:.0%} of each other.")
        else:
            self.top_label.setText(f"{name}  {share}")
            self.uncertainty_label.setText(f"Uncertainty: {level}" + (f" (entropy {result.entropy:.2f})"
                                                                     if result.entropy is not None else ""))
            self._show_measured(self.describe_level(level) if result.model_id == self.model_id else
                                self.describe_level(level, result.phases_read, long_axis_mm)
                                if result.model_id == answer_id(self.model_id) else "")
        self.uncertainty_label.setStyleSheet(f"color: {UNCERTAINTY_COLORS.get(level, '#c8c8c8')};")
        where = f"slice {self.slice_number(result.slice_index)}" if result.slice_index is not None else "its largest slice"
        accepted = f" · accepted as label by {result.accepted_by}" if result.accepted_by else ""
        read = ", ".join(p.replace("_", "-") for p in result.phases_read)
        self.detail_label.setText(f"{result.model_id}, on {where}" + (f", read on the {read} phase"
                                                                      + ("s" if len(result.phases_read) > 1 else "")
                                                                      if read else "") + f", {_local_time(result.time)}{accepted}"
                                  + self.describe_heatmap(result.heatmap_inside))

    def show_phase_crops(self, crops: dict[str, np.ndarray], phase_cams: dict[str, np.ndarray] | None = None,
                         cam: np.ndarray | None = None, enhancement_hu: dict[str, dict[str, float]] | None = None) -> None:
        """What the network saw of each phase (its key slice at the liver window), with that phase's own
        heatmap (`phase_cams`, a multiphase model) or the combined input's (`cam`) laid over it, and under
        it the lesion's and the liver's HU the model measured (`enhancement_hu`); none when `crops` is
        empty (no row, so the panel is no taller than before)."""
        phase_cams = phase_cams or {}
        enhancement_hu = enhancement_hu or {}
        for label in self.crop_labels:
            self.crops_row.removeWidget(label)
            # Hidden now: until its deferred deletion it would stay painted where it was, over the panel.
            label.hide()
            label.deleteLater()
        self.crop_labels = []
        for phase, crop in crops.items():
            label = QLabel()
            own = phase_cams.get(phase)
            heat = own if own is not None else cam
            label.setPixmap(crop_pixmap(crop, heat))
            label.setToolTip(f"{phase.replace('_', '-')}: what the network read, with "
                             + ("where it looked in this phase" if own is not None
                                else "the heatmap of its input" if cam is not None else "no heatmap of this phase"))
            measured = enhancement_hu.get(phase)
            caption = QLabel(phase.replace("_", "-") + (f"\nL {measured['lesion_hu']:.0f} · liver {measured['liver_hu']:.0f}"
                                                       if measured else ""))
            if measured:
                caption.setToolTip("Median HU of the lesion (L) and of the liver ring around it on this phase's key "
                                   "slice: the enhancement the phase reader read, with the image model's answer")
            caption.setStyleSheet("color: #9a9a9a; font-size: 8pt;")
            column = QWidget()
            box = QVBoxLayout(column)
            box.setContentsMargins(0, 0, 0, 0)
            box.setSpacing(1)
            box.addWidget(label)
            box.addWidget(caption)
            self.crops_row.addWidget(column)
            self.crop_labels.append(column)

    def _show_measured(self, text: str) -> None:
        # Hidden when empty, so the panel (and the smallest window) is no taller than without it.
        self.measured_label.setText(text)
        self.measured_label.setVisible(bool(text))

    @staticmethod
    def describe_heatmap(inside: float | None) -> str:
        """Whether the heatmap is about the lesion: its share within 5 mm of the outline."""
        if inside is None:
            return ""
        if inside < HEATMAP_INSIDE_MIN:
            return (f"\nThe heatmap lies mostly outside the outline ({inside:.0%} within 5 mm of it): it does not "
                    "show why the model answered so.")
        return f"\n{inside:.0%} of the heatmap lies within 5 mm of the outline."

    def describe_level(self, level: str, reader_phases: Sequence[str] | None = None,
                       long_axis_mm: float | None = None) -> str:
        """How often this model (its phase reader, reading `reader_phases`) was right when it showed `level`
        on its test split, and the reader's macro-F1 on those phases and on the size band of a lesion whose
        key-slice long axis is `long_axis_mm` ("" when unmeasured)."""
        if reader_phases is None:
            return describe_measured_level(level, self.by_uncertainty, self.simulated)
        subset = subset_name(reader_phases)
        return describe_measured_level(level, self.reader_by_uncertainty.get(subset, {}), self.reader_simulated,
                                       read_on_phases=True,
                                       macro_f1=format_subset_score(self.reader_scores.get(subset), long_axis_mm))

    def show_batch(self, done: int, total: int) -> None:
        running = done < total
        self.batch_progress.setRange(0, max(total, 1))
        self.batch_progress.setValue(done)
        self.batch_progress.setFormat(f"{done}/{total} lesions")
        self.batch_progress.setVisible(running)
        self.cancel_button.setVisible(running)
