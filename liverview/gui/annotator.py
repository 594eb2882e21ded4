"""Drawing and editing tools on the acquired-plane view, over the Qt-free `AnnotationStore`."""
from __future__ import annotations

import math
from enum import StrEnum

import cv2
import numpy as np
from PySide6.QtCore import QObject, QPointF, Qt, Signal

from liverview.annotations.document import Lesion, Roi, new_id
from liverview.annotations.labels import LabelTaxonomy
from liverview.annotations.measurements import find_lesion_to_join, format_measurement, measure_lesion, roi_mask
from liverview.annotations.store import AnnotationStore, Changed
from liverview.gui.roi_overlay import RoiOverlay
from liverview.gui.viewer import Viewer
from liverview.imaging.measure import diameters_mm, polygon_mask
from liverview.imaging.orientation import slice_number
from liverview.imaging.outline import (ellipse_points, mask_to_polygons, paint_disc, propose_outline,
                                       rectangle_points, simplify_points)
from liverview.io.volume import Volume
from liverview.session import Session, SessionEvent, SessionEventKind


#: A one-click outline longer than this (mm) is pointed out: it may be the liver rather than a lesion.
LARGE_OUTLINE_MM = 100.0


class Tool(StrEnum):
    NAVIGATE = "navigate"
    SELECT = "select"
    RECTANGLE = "rectangle"
    ELLIPSE = "ellipse"
    POLYGON = "polygon"
    FREEHAND = "freehand"
    BRUSH = "brush"
    ERASER = "eraser"
    AUTO = "auto"


#: (tool, menu text, shortcut)
TOOLS: tuple[tuple[Tool, str, str], ...] = (
    (Tool.NAVIGATE, "Window/level", "W"),
    (Tool.SELECT, "Select / edit", "V"),
    (Tool.RECTANGLE, "Rectangle", "X"),
    (Tool.ELLIPSE, "Ellipse", "O"),
    (Tool.POLYGON, "Polygon", "P"),
    (Tool.FREEHAND, "Freehand", "D"),
    (Tool.BRUSH, "Brush", "B"),
    (Tool.ERASER, "Eraser", "E"),
    (Tool.AUTO, "One-click outline", "A"),
)

VERTEX_GRAB_PX = 7.0
#: Brush/eraser outlines are simplified this far (pixels) so they keep few, editable vertices.
EDIT_TOLERANCE_PX = 0.3


class Annotator(QObject):
    """Turns mouse gestures on the axial view into store edits, and keeps the overlay in sync."""

    selection_changed = Signal(object)  # lesion id or None
    message = Signal(str)

    def __init__(self, viewer: Viewer, session: Session, taxonomy: LabelTaxonomy) -> None:
        super().__init__()
        if session.volume is None or session.store is None:
            raise ValueError("the annotator works on an open series")
        self.viewer = viewer
        self.view = viewer.views[0]
        self.session = session
        self.volume: Volume = session.volume
        self.store: AnnotationStore = session.store
        self.taxonomy = taxonomy
        self.tool = Tool.NAVIGATE
        self.current_label: str | None = None
        self.brush_radius_mm = 5.0
        self.overlay = RoiOverlay(self.view)
        self._polygon: list[tuple[float, float]] = []
        self._drag: dict = {}
        self.view.view_box.tool_sink = self
        session.subscribe(self._on_session_event)
        viewer.slice_changed.connect(lambda *_: self.redraw())
        self.view.cursor_moved.connect(self._on_hover)
        self.redraw()

    def detach(self) -> None:
        self.session.unsubscribe(self._on_session_event)
        self.view.view_box.tool_sink = None
        self.overlay.clear()
        self.overlay.clear_preview()

    # -- state -----------------------------------------------------------------------------------
    def set_tool(self, tool: Tool) -> None:
        self._cancel_gesture()
        self.tool = tool
        self.redraw()

    def handles_left_button(self) -> bool:
        return self.tool != Tool.NAVIGATE

    @property
    def selected_lesion(self) -> str | None:
        return self.session.selected_lesion

    @property
    def selected_roi(self) -> str | None:
        return self.session.selected_roi

    def lesions(self) -> list[Lesion]:
        return self.session.visible_lesions()

    def select(self, lesion_id: str | None, roi_id: str | None = None) -> None:
        if lesion_id is not None and roi_id is None:
            lesion = self.store.document.lesion(lesion_id)
            here = lesion.rois_on(self.view.slice_index)
            roi_id = (here or lesion.rois)[0].id if lesion.rois else None
        self.session.select(lesion_id, roi_id)

    def selected(self) -> Lesion | None:
        return self.session.selected()

    def redraw(self) -> None:
        self.overlay.draw(self.lesions(), self.taxonomy, self.selected_lesion, self.selected_roi,
                          handles=self.tool == Tool.SELECT, numbers=self.store.document.lesion_numbers())

    def _on_session_event(self, event: SessionEvent) -> None:
        if event.kind is SessionEventKind.SELECTION_CHANGED:
            self.redraw()
            self.selection_changed.emit(self.session.selected_lesion)
        elif event.kind is SessionEventKind.READERS_SHOWN:
            self.redraw()
        elif event.kind is SessionEventKind.ANNOTATIONS_CHANGED and event.change is not None and event.change.drawn:
            self.redraw()

    # -- commands (menu / keyboard) --------------------------------------------------------------
    def apply_label(self, label_id: str) -> None:
        """Give the label to the selected lesion; with none selected, to the next new lesion only
        (a label never carries over to lesions drawn after it)."""
        lesion = self.selected()
        if lesion is None:
            self.current_label = label_id
            self.message.emit(f"The next lesion you outline gets the label {self.taxonomy.get(label_id).name}")
        elif self.is_mine(lesion):
            if lesion.label != label_id:
                self.store.set_label(lesion.id, label=label_id)
            self.message.emit(f"Lesion {self._number(lesion)}: {self.taxonomy.get(label_id).name}")

    def start_new_lesion(self) -> None:
        """The next outline starts a new, unlabelled lesion (Ctrl+N)."""
        self.current_label = None
        self.select(None)
        self.message.emit("Outline the new lesion; it starts without a label")

    def _number(self, lesion: Lesion) -> str:
        """The lesion as the table and its tag name it (L1, L2, …), not its internal id."""
        return self.store.document.lesion_numbers().get(lesion.id, lesion.id)

    def is_mine(self, lesion: Lesion) -> bool:
        """True for the reader's own lesion; for another reader's, says why it cannot be edited."""
        if lesion.reader == self.store.reader:
            return True
        self.message.emit(f"Lesion {self._number(lesion)} is {lesion.reader}'s and stays their opinion; outline it "
                          "yourself, or decide its label in the consensus (Ctrl+K)")
        return False

    def delete_selected_outline(self) -> None:
        lesion = self.selected()
        if lesion is not None and self.selected_roi is not None and self.is_mine(lesion):
            self.store.remove_roi(lesion.id, self.selected_roi)
            self.select(lesion.id if self.selected() is not None else None)

    def delete_selected_lesion(self) -> None:
        lesion = self.selected()
        if lesion is not None and self.is_mine(lesion):
            self.store.remove_lesion(lesion.id)
            self.select(None)

    def copy_outline_here(self) -> None:
        """Copy the selected lesion's nearest outline onto the current slice, to be adjusted."""
        lesion = self.selected()
        z = self.view.slice_index
        if lesion is None:
            self.message.emit("Select a lesion first, then move to the next slice and copy its outline")
            return
        if not self.is_mine(lesion):
            return
        if lesion.rois_on(z):
            self.message.emit(f"Lesion {self._number(lesion)} already has an outline on this slice")
            return
        source = min(lesion.rois, key=lambda r: abs(r.slice_index - z))
        roi = self.store.copy_roi_to_slice(lesion.id, source.id, z, self.volume.sop_instance_uids[z])
        self.select(lesion.id, roi.id)
        m = measure_lesion(self.volume, self.store.document.lesion(lesion.id))
        number = self._number(lesion)
        self.message.emit(f"Outline of {number} copied from slice {slice_number(self.volume, source.slice_index)} to "
                          f"{slice_number(self.volume, z)}: adjust it. "
                          f"{number} now spans {m.n_slices} slices, volume {format_measurement(m, 'volume_ml')} mL")

    def finish_polygon(self) -> None:
        if len(self._polygon) >= 3:
            self._commit(list(self._polygon), "polygon")
        self._cancel_gesture()

    def cancel(self) -> None:
        self._cancel_gesture()

    # -- gestures --------------------------------------------------------------------------------
    def on_tool_click(self, pos: QPointF, double: bool, modifiers: Qt.KeyboardModifier) -> None:
        x, y = self.view.view_to_pixel(pos)
        if self.tool == Tool.POLYGON:
            if double or (len(self._polygon) >= 3 and self._near_screen(self._polygon[0], (x, y))):
                self.finish_polygon()
            else:
                self._polygon.append((x, y))
                self.overlay.set_preview(self._polygon, closed=False)
            return
        if self.tool == Tool.AUTO:
            points = propose_outline(self.volume.array[self.view.slice_index], (x, y),
                                     self.viewer.window_center, self.viewer.window_width, self.volume.spacing_mm[1:])
            if points is None:
                self.message.emit("No outline found there: click inside the lesion, or draw it by hand")
                return
            self._commit(points, "auto")
            # A click on plain parenchyma grows over the organ; a giant hemangioma is as large, so say
            # it rather than refuse it.
            long_axis = diameters_mm(points, self.volume.spacing_mm[1:])[0]
            if long_axis > LARGE_OUTLINE_MM:
                self.message.emit(f"The proposed outline is {long_axis:.0f} mm across, larger than most lesions: "
                                  "if you clicked normal liver, take it back with Ctrl+Z")
            return
        hit = self._hit(x, y)
        self.select(*hit) if hit else self.select(None)

    def on_tool_drag(self, pos: QPointF, phase: str, modifiers: Qt.KeyboardModifier) -> None:
        x, y = self.view.view_to_pixel(pos)
        handler = {
            Tool.RECTANGLE: self._drag_box, Tool.ELLIPSE: self._drag_box, Tool.FREEHAND: self._drag_freehand,
            Tool.BRUSH: self._drag_brush, Tool.ERASER: self._drag_brush, Tool.SELECT: self._drag_select,
        }.get(self.tool)
        if handler is not None:
            handler(x, y, phase)

    def _drag_box(self, x: float, y: float, phase: str) -> None:
        if phase == "start":
            self._drag = {"anchor": (x, y)}
            return
        x0, y0 = self._drag.get("anchor", (x, y))
        shape = rectangle_points if self.tool == Tool.RECTANGLE else ellipse_points
        points = shape(x0, y0, x, y)
        if phase == "finish":
            self.overlay.clear_preview()
            if abs(x - x0) >= 1.0 and abs(y - y0) >= 1.0:
                self._commit(points, self.tool.value)
            self._drag = {}
        else:
            self.overlay.set_preview(points)

    def _drag_freehand(self, x: float, y: float, phase: str) -> None:
        if phase == "start":
            self._drag = {"points": [(x, y)]}
            return
        points = self._drag.setdefault("points", [])
        points.append((x, y))
        if phase == "finish":
            self.overlay.clear_preview()
            simplified = simplify_points(points)
            if len(simplified) >= 3 and polygon_mask(simplified, self.volume.array.shape[1:]).any():
                self._commit(simplified, "freehand")
            self._drag = {}
        else:
            self.overlay.set_preview(points, closed=False)

    def _drag_brush(self, x: float, y: float, phase: str) -> None:
        radius = (self.brush_radius_mm / self.volume.spacing_mm[2], self.brush_radius_mm / self.volume.spacing_mm[1])
        if phase == "start":
            self._drag = {"mask": np.zeros(self.volume.array.shape[1:], dtype=bool), "last": (x, y)}
        stroke = self._drag.get("mask")
        if stroke is None:
            return
        last = self._drag.get("last", (x, y))
        steps = max(1, int(math.hypot(x - last[0], y - last[1]) / max(0.5, min(radius) / 2)))
        for t in np.linspace(0, 1, steps + 1):
            paint_disc(stroke, (last[0] + (x - last[0]) * t, last[1] + (y - last[1]) * t), radius)
        self._drag["last"] = (x, y)
        outlines = mask_to_polygons(stroke, tolerance_px=EDIT_TOLERANCE_PX)
        if phase == "finish":
            self.overlay.clear_preview()
            self._apply_brush(stroke, erase=self.tool == Tool.ERASER)
            self._drag = {}
        elif outlines:
            self.overlay.set_preview(outlines[0])

    def _apply_brush(self, stroke: np.ndarray, erase: bool) -> None:
        z = self.view.slice_index
        lesion = self.selected()
        target = None
        if lesion is not None and lesion.reader == self.store.reader:
            target = next((roi for roi in lesion.rois_on(z) if (roi_mask(self.volume, roi) & stroke).any()), None)
        if erase:
            if target is None:
                self.message.emit("The eraser works on the selected lesion's outline on this slice")
                return
            remaining = mask_to_polygons(roi_mask(self.volume, target) & ~stroke, min_pixels=2, tolerance_px=EDIT_TOLERANCE_PX)
            with self.store.edit("Erase", lesion.id, changed=Changed.GEOMETRY | Changed.ADJUDICATION) as doc:
                edited = doc.lesion(lesion.id)
                edited.rois = [r for r in edited.rois if r.id != target.id]
                for i, points in enumerate(remaining):
                    edited.rois.append(Roi(z, points, "brush", self.volume.sop_instance_uids[z], target.id if i == 0 else new_id("r")))
                if not edited.rois:
                    doc.lesions.remove(edited)
            self.select(lesion.id if self.selected() is not None else None)
            return
        if target is not None:
            merged = mask_to_polygons(roi_mask(self.volume, target) | stroke, tolerance_px=EDIT_TOLERANCE_PX)
            self.store.update_roi(lesion.id, target.id, merged[0], kind="brush")
            return
        outlines = mask_to_polygons(stroke, tolerance_px=EDIT_TOLERANCE_PX)
        if outlines:
            self._commit(outlines[0], "brush")

    def _drag_select(self, x: float, y: float, phase: str) -> None:
        if phase == "start":
            self._drag = {}
            lesion = self.selected()
            roi = lesion.roi(self.selected_roi) if lesion is not None and self.selected_roi else None
            if roi is not None and roi.slice_index == self.view.slice_index and lesion.reader == self.store.reader:
                vertex = self._vertex_near(roi, x, y)
                if vertex is not None:
                    self._drag = {"lesion": lesion.id, "roi": roi.id, "vertex": vertex, "points": list(roi.points_xy)}
                    return
            hit = self._hit(x, y)
            if hit is not None:
                self.select(*hit)
                if self.store.document.lesion(hit[0]).reader != self.store.reader:
                    return  # another reader's outline: selected to look at, never dragged
                roi = self.store.document.lesion(hit[0]).roi(hit[1])
                self._drag = {"lesion": hit[0], "roi": hit[1], "origin": (x, y), "points": list(roi.points_xy)}
            return
        if not self._drag:
            return
        points = list(self._drag["points"])
        if "vertex" in self._drag:
            points[self._drag["vertex"]] = (x, y)
        else:
            dx, dy = x - self._drag["origin"][0], y - self._drag["origin"][1]
            points = [(px + dx, py + dy) for px, py in points]
        if phase == "finish":
            self.overlay.clear_preview()
            if points != self._drag["points"]:
                self.store.update_roi(self._drag["lesion"], self._drag["roi"], points)
            self._drag = {}
        else:
            self.overlay.set_preview(points)

    # -- helpers ---------------------------------------------------------------------------------
    def _commit(self, points: list[tuple[float, float]], kind: str) -> None:
        """A finished outline becomes a new lesion, or joins the lesion it continues on a neighbouring slice."""
        z = self.view.slice_index
        roi = Roi(z, [(float(px), float(py)) for px, py in points], kind, self.volume.sop_instance_uids[z])
        mask = polygon_mask(roi.points_xy, self.volume.array.shape[1:])
        if not mask.any():
            self.message.emit("That outline encloses no pixel centre; draw a larger one")
            return
        mine = [lesion for lesion in self.lesions() if lesion.reader == self.store.reader]
        selected = self.selected()
        candidates = ([selected] if selected is not None and selected in mine else []) + mine
        joined = find_lesion_to_join(self.volume, candidates, self.store.reader, z, mask)
        if joined is not None:
            self.store.add_roi(joined.id, roi)
            self.select(joined.id, roi.id)
        else:
            lesion = self.store.add_lesion(roi, label=self.current_label)
            self.current_label = None
            self.select(lesion.id, roi.id)

    def _hit(self, x: float, y: float) -> tuple[str, str] | None:
        z = self.view.slice_index
        hits = []
        for lesion in self.lesions():
            for roi in lesion.rois_on(z):
                contour = np.asarray(roi.points_xy, dtype=np.float32).reshape(-1, 1, 2)
                if cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0:
                    hits.append((lesion.id != self.selected_lesion, abs(cv2.contourArea(contour)), lesion.id, roi.id))
        if not hits:
            return None
        _, _, lesion_id, roi_id = min(hits)
        return lesion_id, roi_id

    def _vertex_near(self, roi: Roi, x: float, y: float) -> int | None:
        best = None
        for i, point in enumerate(roi.points_xy):
            if self._near_screen(point, (x, y)):
                distance = math.hypot(point[0] - x, point[1] - y)
                if best is None or distance < best[0]:
                    best = (distance, i)
        return None if best is None else best[1]

    def _near_screen(self, a: tuple[float, float], b: tuple[float, float]) -> bool:
        """Within a few screen pixels, whatever the zoom."""
        pa = self.view.view_box.mapViewToDevice(QPointF(*self.view.pixel_to_view(*a)))
        pb = self.view.view_box.mapViewToDevice(QPointF(*self.view.pixel_to_view(*b)))
        if pa is None or pb is None:
            return False
        return math.hypot(pa.x() - pb.x(), pa.y() - pb.y()) <= VERTEX_GRAB_PX

    def _on_hover(self, index) -> None:
        if self.tool == Tool.POLYGON and self._polygon and index is not None:
            self.overlay.set_preview(self._polygon + [(float(index[2]), float(index[1]))], closed=False)

    def _cancel_gesture(self) -> None:
        self._polygon = []
        self._drag = {}
        self.overlay.clear_preview()
