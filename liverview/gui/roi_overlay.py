"""Draws the lesions' outlines on the acquired-plane view, plus the preview of the shape being drawn."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import QGraphicsPathItem

from liverview.annotations.document import Lesion
from liverview.annotations.labels import LabelTaxonomy
from liverview.gui.slice_view import SliceView

#: Unlabelled outlines: a saturated yellow no label uses, visible on bright contrast-enhanced liver.
UNLABELLED = (250, 225, 40)
#: A tag is raised at most this many tag heights to clear the others (a crowded slice stays bounded).
MAX_TAG_LEVELS = 6


class RoiOverlay:
    """Outline items for the current slice; rebuilt on every change (a slice holds few outlines)."""

    def __init__(self, view: SliceView) -> None:
        self.view = view
        self._items: list = []
        self.preview = QGraphicsPathItem()
        pen = QPen(QColor(255, 255, 120), 0)
        pen.setCosmetic(True)
        pen.setStyle(Qt.DashLine)
        self.preview.setPen(pen)
        self.preview.setZValue(30)
        self.preview.setAcceptedMouseButtons(Qt.NoButton)
        view.view_box.addItem(self.preview, ignoreBounds=True)

    def _path(self, points_px, closed: bool = True) -> QPainterPath:
        polygon = QPolygonF([QPointF(*self.view.pixel_to_view(x, y)) for x, y in points_px])
        path = QPainterPath()
        if len(polygon):
            path.addPolygon(polygon)
            if closed:
                path.closeSubpath()
        return path

    def _add(self, item) -> None:
        # Overlay items must never take the mouse: gestures belong to the view box (the tools).
        item.setAcceptedMouseButtons(Qt.NoButton)
        item.setAcceptHoverEvents(False)
        self.view.view_box.addItem(item, ignoreBounds=True)
        self._items.append(item)

    def clear(self) -> None:
        for item in self._items:
            self.view.view_box.removeItem(item)
        self._items.clear()

    def draw(self, lesions: list[Lesion], taxonomy: LabelTaxonomy, selected_lesion: str | None,
             selected_roi: str | None, handles: bool, numbers: dict[str, str] | None = None) -> None:
        """The outlines on the slice shown, each tagged with its number (`numbers`: L1, L2, …) and label."""
        numbers = numbers or {}
        self.clear()
        if self.view.volume is None:
            return
        z = self.view.slice_index
        placed: list[QRectF] = []
        # With several readers' lesions shown, one finding carries a tag per reader: each names its reader.
        by_reader = len({lesion.reader for lesion in lesions}) > 1
        for lesion in lesions:
            color = taxonomy.get(lesion.label).color if lesion.label in taxonomy else UNLABELLED
            for roi in lesion.rois_on(z):
                chosen = lesion.id == selected_lesion
                item = QGraphicsPathItem(self._path(roi.points_xy))
                pen = QPen(QColor(*color), 2.5 if chosen else 1.4)
                pen.setCosmetic(True)
                if roi.id == selected_roi:
                    pen.setWidthF(3.0)
                item.setPen(pen)
                fill = QColor(*color)
                fill.setAlpha(45 if chosen else 18)
                item.setBrush(fill)
                item.setZValue(20)
                self._add(item)
                x0, y0 = np.min(np.asarray(roi.points_xy), axis=0)
                # A dark backing keeps the tag readable on bright, contrast-enhanced liver.
                text = f"{numbers.get(lesion.id, lesion.id)} {taxonomy.name_of(lesion.label, 'unlabelled')}"
                tag = pg.TextItem(text + (f" · {lesion.reader}" if by_reader else ""),
                                  color=QColor(*color), anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 170))
                tag.setPos(*self.view.pixel_to_view(float(x0), float(y0) - 1))
                tag.setZValue(21)
                self._add(tag)
                self._clear_of(tag, placed)
                if handles and roi.id == selected_roi:
                    spots = [self.view.pixel_to_view(x, y) for x, y in roi.points_xy]
                    scatter = pg.ScatterPlotItem([p[0] for p in spots], [p[1] for p in spots], size=7, symbol="s",
                                                 pen=pg.mkPen("k"), brush=pg.mkBrush(*color))
                    scatter.setZValue(25)
                    self._add(scatter)

    def _clear_of(self, tag: pg.TextItem, placed: list[QRectF]) -> None:
        """Move `tag` left as far as needed to end inside the view (a lesion near the right edge had its
        name cut), then raise it above its outline by whole tag heights until it covers none of the tags
        `placed` (screen pixels, where tags keep their size at any zoom), and add it to them."""
        anchor = self.view.view_box.mapViewToScene(tag.pos())
        size = tag.textItem.boundingRect()
        box = QRectF(anchor.x(), anchor.y() - size.height(), size.width(), size.height())
        visible = self.view.view_box.sceneBoundingRect()
        shift = max(0.0, min(box.right() - visible.right(), box.left() - visible.left()))
        box.translate(-shift, 0.0)
        level = 0
        while level < MAX_TAG_LEVELS and any(box.intersects(other) for other in placed):
            level += 1
            box.translate(0.0, -size.height())
        if level or shift:
            tag.setAnchor((shift / size.width(), 1 + level))
        placed.append(box)

    def set_preview(self, points_px, closed: bool = True) -> None:
        self.preview.setPath(self._path(points_px, closed) if points_px else QPainterPath())

    def clear_preview(self) -> None:
        self.preview.setPath(QPainterPath())
