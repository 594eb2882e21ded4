"""The Grad-CAM heatmap drawn over the acquired-plane view, in register with the lesion's outline."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt

from liverview.gui.slice_view import SliceView

if TYPE_CHECKING:  # the model layer imports torch; the window must not pay for it at start-up
    from liverview.model.classify import Heatmap

COLORMAP = "inferno"


def heatmap_lookup_table(n: int = 256) -> np.ndarray:
    """RGBA table: the colour map with opacity rising with the value, so weak attention leaves the
    anatomy visible instead of tinting the whole square."""
    table = pg.colormap.get(COLORMAP).getLookupTable(0.0, 1.0, n, alpha=True).astype(np.uint8)
    table[:, 3] = np.clip(np.linspace(0.0, 1.4, n), 0.0, 1.0) * 255
    return table


class HeatmapOverlay:
    """One ImageItem above the slice and below the outlines, shown only on the heatmap's own slice."""

    def __init__(self, view: SliceView) -> None:
        self.view = view
        self.item = pg.ImageItem(axisOrder="row-major")
        self.item.setLookupTable(heatmap_lookup_table())
        self.item.setZValue(10)
        self.item.setAcceptedMouseButtons(Qt.NoButton)
        self.item.setAcceptHoverEvents(False)
        self.item.hide()
        view.view_box.addItem(self.item, ignoreBounds=True)
        self.heatmap: Heatmap | None = None
        self.enabled = True
        self.opacity = 0.6

    def set_heatmap(self, heatmap: Heatmap | None) -> None:
        self.heatmap = heatmap
        if heatmap is not None:
            self.item.setImage(heatmap.cam, levels=(0.0, 1.0), autoLevels=False)
            x0, y0, width, height = heatmap.extent_px()
            # x0, y0 is the square's edge in the coordinates pixel_to_view maps (pixel centres are integers).
            left, top = self.view.pixel_to_view(x0, y0)
            sy, sx = heatmap.spacing_yx
            self.item.setRect(QRectF(left, top, width * sx, height * sy))
        self.update()

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled
        self.update()

    def set_opacity(self, opacity: float) -> None:
        self.opacity = float(np.clip(opacity, 0.0, 1.0))
        self.item.setOpacity(self.opacity)

    def update(self) -> None:
        """Show the map only when it belongs to the slice on screen."""
        visible = (self.enabled and self.heatmap is not None and self.view.volume is not None
                   and self.view.slice_index == self.heatmap.slice_index)
        self.item.setOpacity(self.opacity)
        self.item.setVisible(visible)

    def is_visible(self) -> bool:
        return self.item.isVisible()

    def detach(self) -> None:
        self.view.view_box.removeItem(self.item)
