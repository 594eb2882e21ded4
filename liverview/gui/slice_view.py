"""One 2-D view of a volume (acquired plane or a reformat) in physical proportions, with overlays.

Mouse: wheel scrolls slices, Ctrl+wheel zooms, left-drag changes window/level, middle-drag pans,
right-drag zooms, left-click moves the linked crosshair.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from liverview.imaging.orientation import ViewAxes
from liverview.io.volume import Volume

CROSSHAIR_PEN = pg.mkPen(QColor(255, 200, 0, 150), width=1, style=Qt.DashLine)


class ToolSink(Protocol):
    """Receives the left button when a drawing/editing tool is active (positions in view mm)."""

    def handles_left_button(self) -> bool: ...

    def on_tool_drag(self, pos: QPointF, phase: str, modifiers: Qt.KeyboardModifier) -> None: ...

    def on_tool_click(self, pos: QPointF, double: bool, modifiers: Qt.KeyboardModifier) -> None: ...


class ReadingViewBox(pg.ViewBox):
    """A ViewBox with a reading-room mouse map instead of pyqtgraph's defaults."""

    scrolled = Signal(int)
    window_dragged = Signal(float, float)
    clicked = Signal(QPointF)

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self.setMouseMode(pg.ViewBox.PanMode)
        self.tool_sink: ToolSink | None = None

    def _tool_active(self) -> bool:
        return self.tool_sink is not None and self.tool_sink.handles_left_button()

    def wheelEvent(self, ev, axis=None):  # noqa: N802 - Qt naming
        if ev.modifiers() & (Qt.ControlModifier | Qt.MetaModifier):
            super().wheelEvent(ev, axis)
            return
        steps = ev.delta() / 120.0 if hasattr(ev, "delta") else ev.angleDelta().y() / 120.0
        if steps:
            self.scrolled.emit(-1 if steps > 0 else 1)
        ev.accept()

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802
        if ev.button() == Qt.LeftButton and self._tool_active():
            ev.accept()
            if ev.isStart():
                self.tool_sink.on_tool_drag(self.mapSceneToView(ev.buttonDownScenePos()), "start", ev.modifiers())
            self.tool_sink.on_tool_drag(self.mapSceneToView(ev.scenePos()), "finish" if ev.isFinish() else "move",
                                        ev.modifiers())
            return
        if ev.button() == Qt.LeftButton:
            ev.accept()
            delta = ev.screenPos() - ev.lastScreenPos()
            self.window_dragged.emit(float(delta.x()), float(delta.y()))
            return
        super().mouseDragEvent(ev, axis)

    def mouseClickEvent(self, ev):  # noqa: N802
        if ev.button() == Qt.LeftButton and self._tool_active():
            ev.accept()
            self.tool_sink.on_tool_click(self.mapSceneToView(ev.scenePos()), ev.double(), ev.modifiers())
            return
        if ev.button() == Qt.LeftButton:
            ev.accept()
            self.clicked.emit(self.mapSceneToView(ev.scenePos()))
            return
        super().mouseClickEvent(ev)


class OverlayLabel(QLabel):
    """Text over the image with a dark rim around each glyph, so that it stays readable over the white
    table, bone or contrast (plain light text vanished there). Four offset dark copies then the text:
    a few short lines a view, cheaper than a blur effect over a label the size of the view."""

    RIM = QColor(0, 0, 0, 220)

    def __init__(self, parent: QWidget, align: Qt.AlignmentFlag, color: str, bold: bool = False) -> None:
        super().__init__(parent)
        self.color = QColor(color)
        self.setTextFormat(Qt.PlainText)  # DICOM strings are untrusted: never rich text
        self.setAlignment(align)
        self.setAttribute(Qt.WA_TransparentForMouseEvents)
        self.setStyleSheet("background: transparent;")
        font = QFont(self.font())
        font.setPointSizeF(max(8.0, font.pointSizeF() * 0.95))
        font.setBold(bold)
        self.setFont(font)

    def paintEvent(self, event):  # noqa: N802 - Qt naming
        text = self.text()
        if not text:
            return
        painter = QPainter(self)
        painter.setFont(self.font())
        rect, flags = self.contentsRect(), int(self.alignment())
        painter.setPen(self.RIM)
        for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            painter.drawText(rect.translated(dx, dy), flags, text)
        painter.setPen(self.color)
        painter.drawText(rect, flags, text)
        painter.end()


def _overlay_label(parent: QWidget, align: Qt.AlignmentFlag) -> OverlayLabel:
    return OverlayLabel(parent, align, "#d8d8d8")


class SliceView(QWidget):
    """Shows `volume` through `axes`; reports the cursor as a fractional (z, y, x) index."""

    scrolled = Signal(int)
    window_dragged = Signal(float, float)
    cursor_moved = Signal(object)  # np.ndarray (z, y, x) or None when outside the image
    clicked = Signal(object)  # np.ndarray (z, y, x)
    activated = Signal()

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.volume: Volume | None = None
        self.axes: ViewAxes | None = None
        self.slice_index = 0
        self._levels = (0.0, 1.0)
        self._invert = False
        #: Where the mouse last was, in view (mm) coordinates; None until it moves over this volume.
        self._mouse_at: QPointF | None = None

        self.graphics = pg.GraphicsView(self)
        self.graphics.setBackground("k")
        self.view_box = ReadingViewBox()
        self.graphics.setCentralItem(self.view_box)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.view_box.addItem(self.image)
        self.h_line = pg.InfiniteLine(angle=0, pen=CROSSHAIR_PEN, movable=False)
        self.v_line = pg.InfiniteLine(angle=90, pen=CROSSHAIR_PEN, movable=False)
        for line in (self.h_line, self.v_line):
            line.setZValue(10)
            self.view_box.addItem(line, ignoreBounds=True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics)

        self._corner_text: dict[str, str] = {}
        self.corner = {
            "tl": _overlay_label(self.graphics, Qt.AlignLeft | Qt.AlignTop),
            "tr": _overlay_label(self.graphics, Qt.AlignRight | Qt.AlignTop),
            "bl": _overlay_label(self.graphics, Qt.AlignLeft | Qt.AlignBottom),
            "br": _overlay_label(self.graphics, Qt.AlignRight | Qt.AlignBottom),
        }
        self.letters = {side: OverlayLabel(self.graphics, Qt.AlignCenter, "#ffd24a", bold=True)
                        for side in ("top", "bottom", "left", "right")}

        self.view_box.scrolled.connect(self.scrolled)
        self.view_box.window_dragged.connect(self.window_dragged)
        self.view_box.clicked.connect(self._on_click)
        self.graphics.scene().sigMouseMoved.connect(self._on_mouse_moved)

    # -- content ---------------------------------------------------------------------------------
    def set_volume(self, volume: Volume, axes: ViewAxes) -> None:
        self.volume, self.axes = volume, axes
        self._mouse_at = None
        self._invert = volume.invert_display
        lut = np.arange(255, -1, -1, dtype=np.uint8) if self._invert else None
        self.image.setLookupTable(lut)
        self.slice_index = volume.array.shape[axes.slice_axis] // 2
        rows, cols = self.image_shape()
        height_mm = rows * volume.spacing_mm[axes.row_axis]
        width_mm = cols * volume.spacing_mm[axes.col_axis]
        self._rect = QRectF(0.0, 0.0, width_mm, height_mm)
        for side, text in axes.letters().items():
            self.letters[side].setText(text)
        self.refresh()
        self.fit()

    def n_slices(self) -> int:
        return 0 if self.volume is None else self.volume.array.shape[self.axes.slice_axis]

    def image_shape(self) -> tuple[int, int]:
        shape = self.volume.array.shape
        return shape[self.axes.row_axis], shape[self.axes.col_axis]

    def current_image(self) -> np.ndarray:
        """The 2-D array on screen (rows top to bottom, columns left to right)."""
        image = np.take(self.volume.array, self.slice_index, axis=self.axes.slice_axis)
        if self.axes.row_axis > self.axes.col_axis:  # a coronal or sagittal series' stored rows run down
            image = image.T
        return image[::-1 if self.axes.flip_rows else 1, ::-1 if self.axes.flip_cols else 1]

    def set_slice(self, index: int) -> None:
        if self.volume is None:
            return
        index = int(np.clip(index, 0, self.n_slices() - 1))
        if index != self.slice_index:
            self.slice_index = index
            self.refresh()

    def set_levels(self, low: float, high: float) -> None:
        self._levels = (float(low), float(high))
        if self.volume is not None:
            self.image.setLevels(self._levels)

    def refresh(self) -> None:
        if self.volume is None:
            return
        self.image.setImage(self.current_image(), autoLevels=False, levels=self._levels)
        self.image.setRect(self._rect)

    def fit(self) -> None:
        if self.volume is not None:
            self.view_box.setRange(rect=self._rect, padding=0.02)

    def set_overlay(self, tl: str = "", tr: str = "", bl: str = "", br: str = "") -> None:
        self._corner_text = {"tl": tl, "tr": tr, "bl": bl, "br": br}
        self._fit_corners()

    def corner_text(self, key: str) -> str:
        """The text a corner shows now (shortened when the view is too narrow for both corners)."""
        return self.corner[key].text()

    def _fit_corners(self) -> None:
        """A left and a right corner share each text row. On the row of the orientation letter (the
        top corners' first line, the bottom corners' last) each keeps half the row minus room for the
        letter; on the other rows a line may use what its partner's line leaves (all of it beside an
        empty corner). Longer lines end in an ellipsis instead of overprinting."""
        width = max(40, self.graphics.width() - 12)
        half = max(20, (width - 40) // 2)
        for left, right, top in (("tl", "tr", True), ("bl", "br", False)):
            lines = {key: self._corner_text.get(key, "").splitlines() for key in (left, right)}
            for key, partner in ((left, right), (right, left)):
                metrics = QFontMetrics(self.corner[key].font())
                own, other = lines[key], lines[partner]
                fitted = []
                for i, line in enumerate(own):
                    if i == (0 if top else len(own) - 1):
                        room = half
                    else:
                        # Top blocks align their first lines, bottom blocks their last.
                        j = i if top else i - len(own) + len(other)
                        beside = metrics.horizontalAdvance(other[j]) if 0 <= j < len(other) else 0
                        room = max(half, width - beside - 8)
                    fitted.append(metrics.elidedText(line, Qt.ElideRight, room))
                self.corner[key].setText("\n".join(fitted))

    # -- geometry --------------------------------------------------------------------------------
    def scene_to_index(self, point: QPointF) -> np.ndarray | None:
        """Fractional (z, y, x) volume index under a point in view (mm) coordinates."""
        if self.volume is None:
            return None
        spacing = self.volume.spacing_mm
        rows, cols = self.image_shape()
        row = point.y() / spacing[self.axes.row_axis] - 0.5
        col = point.x() / spacing[self.axes.col_axis] - 0.5
        if not (-0.5 <= row < rows - 0.5 and -0.5 <= col < cols - 0.5):
            return None
        if self.axes.flip_rows:
            row = rows - 1 - row
        if self.axes.flip_cols:
            col = cols - 1 - col
        index = np.zeros(3)
        index[self.axes.slice_axis] = self.slice_index
        index[self.axes.row_axis] = row
        index[self.axes.col_axis] = col
        return index

    def view_to_pixel(self, point: QPointF) -> tuple[float, float]:
        """(x = column, y = row) pixel coordinates on the displayed image of a view (mm) point."""
        spacing = self.volume.spacing_mm
        return (point.x() / spacing[self.axes.col_axis] - 0.5, point.y() / spacing[self.axes.row_axis] - 0.5)

    def pixel_to_view(self, x: float, y: float) -> tuple[float, float]:
        spacing = self.volume.spacing_mm
        return ((x + 0.5) * spacing[self.axes.col_axis], (y + 0.5) * spacing[self.axes.row_axis])

    def set_crosshair(self, index: np.ndarray) -> None:
        """Place the crosshair at the in-plane position of a (z, y, x) index."""
        if self.volume is None:
            return
        spacing = self.volume.spacing_mm
        rows, cols = self.image_shape()
        row, col = index[self.axes.row_axis], index[self.axes.col_axis]
        if self.axes.flip_rows:
            row = rows - 1 - row
        if self.axes.flip_cols:
            col = cols - 1 - col
        self.h_line.setPos((row + 0.5) * spacing[self.axes.row_axis])
        self.v_line.setPos((col + 0.5) * spacing[self.axes.col_axis])

    # -- events ----------------------------------------------------------------------------------
    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        if self.volume is None:
            return
        self._mouse_at = self.view_box.mapSceneToView(scene_pos)
        self.cursor_moved.emit(self.scene_to_index(self._mouse_at))

    def repeat_hover(self) -> None:
        """Report the voxel under a mouse that has not moved: the slice under it changed."""
        if self.volume is not None and self._mouse_at is not None:
            self.cursor_moved.emit(self.scene_to_index(self._mouse_at))

    def _on_click(self, view_pos: QPointF) -> None:
        self.activated.emit()
        index = self.scene_to_index(view_pos)
        if index is not None:
            self.clicked.emit(index)

    def enterEvent(self, event):  # noqa: N802
        self.activated.emit()
        super().enterEvent(event)

    def resizeEvent(self, event):  # noqa: N802
        super().resizeEvent(event)
        w, h, m = self.graphics.width(), self.graphics.height(), 6
        half_w, half_h = w // 2, h // 2
        for label in self.corner.values():
            label.setGeometry(m, m, w - 2 * m, h - 2 * m)
        self._fit_corners()
        self.letters["top"].setGeometry(half_w - 20, m, 40, 20)
        self.letters["bottom"].setGeometry(half_w - 20, h - 20 - m, 40, 20)
        self.letters["left"].setGeometry(m, half_h - 10, 40, 20)
        self.letters["right"].setGeometry(w - 40 - m, half_h - 10, 40, 20)
        self.letters["left"].setAlignment(Qt.AlignLeft | Qt.AlignVCenter)
        self.letters["right"].setAlignment(Qt.AlignRight | Qt.AlignVCenter)
