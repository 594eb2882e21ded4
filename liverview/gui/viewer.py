"""The reading area: the acquired plane plus two reformats, linked by one crosshair, one window."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QSlider, QSplitter, QVBoxLayout, QWidget

from liverview.gui.slice_view import SliceView
from liverview.imaging.orientation import (axis_direction, plane_title, reading_number, reading_position_mm,
                                           reading_sign, view_axes)
from liverview.imaging.window import CT_PRESETS, WindowPreset, auto_window
from liverview.io.volume import Volume


@dataclass
class CursorInfo:
    """What the status bar shows for the point under the mouse."""

    index: np.ndarray  # (z, y, x) integer voxel
    patient_mm: np.ndarray  # LPS
    value: int
    is_hu: bool
    slice_index: int
    n_slices: int


class Viewer(QWidget):
    """Three linked `SliceView`s sharing a crosshair and a window/level."""

    cursor_info = Signal(object)  # CursorInfo or None
    window_changed = Signal(float, float)  # center, width
    slice_changed = Signal(int, int)  # acquired-plane index, count

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.volume: Volume | None = None
        self.window_center, self.window_width = 40.0, 400.0
        self.preset_name = ""
        self.cursor = np.zeros(3, dtype=int)
        #: The view the mouse is over, whose readout follows the slice shown under a still mouse.
        self._hovered: SliceView | None = None
        self.views = [SliceView("Axial"), SliceView("Coronal"), SliceView("Sagittal")]
        self.active = self.views[0]

        #: Per view, +1 when its array index grows in reading order (head to feet, front to back, right to
        #: left), else -1: what the wheel, the keys and the slice numbers follow.
        self._reading: dict[SliceView, int] = {}
        self.slider = QSlider(Qt.Vertical)
        self.slider.setToolTip("Slice (wheel, arrow keys, Page Up/Down)")
        self.slider.valueChanged.connect(lambda v: self.set_slice(self.views[0], v))

        right = QSplitter(Qt.Vertical)
        right.addWidget(self.views[1])
        right.addWidget(self.views[2])
        main = QSplitter(Qt.Horizontal)
        left = QWidget()
        left_layout = QHBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.setSpacing(2)
        left_layout.addWidget(self.views[0], 1)
        left_layout.addWidget(self.slider)
        main.addWidget(left)
        main.addWidget(right)
        main.setStretchFactor(0, 3)
        main.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(main)

        for view in self.views:
            view.scrolled.connect(lambda d, v=view: self.scroll(d, v))
            view.window_dragged.connect(self._on_window_drag)
            view.cursor_moved.connect(lambda idx, v=view: self._on_cursor(idx, v))
            view.clicked.connect(self.set_cursor)
            view.activated.connect(lambda v=view: setattr(self, "active", v))

    # -- volume ----------------------------------------------------------------------------------
    def set_volume(self, volume: Volume) -> None:
        """Show `volume` (possibly still loading: call `refresh` as more slices arrive)."""
        self.volume = volume
        self._hovered = None
        self.cursor_info.emit(None)  # nothing of the previous study stays in the readout
        axes = view_axes(volume.row_direction, volume.column_direction, volume.normal)
        for view, ax in zip(self.views, axes):
            view.title = plane_title(np.cross(ax.right, ax.down))
            view.set_volume(volume, ax)
            self._reading[view] = reading_sign(axis_direction(volume, ax.slice_axis))
        self.cursor = np.array(volume.array.shape) // 2
        self.slider.blockSignals(True)
        # The reader's first slice (the top one of an axial series) at the slider's top.
        self.slider.setInvertedAppearance(self._reading[self.views[0]] > 0)
        self.slider.setRange(0, volume.array.shape[0] - 1)
        self.slider.setValue(int(self.cursor[0]))
        self.slider.blockSignals(False)
        self.apply_default_window()
        self.set_cursor(self.cursor)

    def refresh(self) -> None:
        for view in self.views:
            view.refresh()
        if self._hovered is not None:
            self._hovered.repeat_hover()  # slices still loading: the value under the mouse arrives

    def apply_default_window(self) -> None:
        """Liver preset for CT; the series' own window, else percentiles, for anything else."""
        if self.volume is None:
            return
        if self.volume.is_hu:
            self.apply_preset(CT_PRESETS[0])
        elif self.volume.info.window is not None:
            center, width = self.volume.info.window
            self.apply_preset(WindowPreset("DICOM", center, width))
        else:
            loaded = self.volume.array[self.volume.loaded] if self.volume.loaded.any() else self.volume.array
            self.apply_preset(auto_window(loaded))

    def series_window(self) -> WindowPreset | None:
        if self.volume is None or self.volume.info.window is None:
            return None
        center, width = self.volume.info.window
        return WindowPreset("Series", center, width)

    # -- window/level ----------------------------------------------------------------------------
    def apply_preset(self, preset: WindowPreset) -> None:
        self.preset_name = preset.name
        self.set_window(preset.center, preset.width, keep_name=True)

    def set_window(self, center: float, width: float, keep_name: bool = False) -> None:
        self.window_center, self.window_width = float(center), max(1.0, float(width))
        if not keep_name:
            self.preset_name = "Custom"
        low, high = self.window_center - self.window_width / 2, self.window_center + self.window_width / 2
        for view in self.views:
            view.set_levels(low, high)
        self._update_overlays()
        self.window_changed.emit(self.window_center, self.window_width)

    def _on_window_drag(self, dx: float, dy: float) -> None:
        # Horizontal drag widens/narrows, vertical shifts the level; sensitivity follows the width
        # so fine adjustment stays possible in a narrow liver window.
        step = max(self.window_width / 256.0, 0.5)
        self.set_window(self.window_center + dy * step, self.window_width + dx * step * 2)

    # -- navigation ------------------------------------------------------------------------------
    def scroll(self, delta: int, view: SliceView | None = None) -> None:
        """`delta` slices on in reading order (toward the feet in an axial view), back when negative."""
        view = view or self.active
        self.set_slice(view, view.slice_index + delta * self._reading.get(view, 1))

    def slice_number(self, index: int, view: SliceView | None = None) -> int:
        """The number a reader sees for slice `index` of `view` (the acquired plane by default)."""
        view = view or self.views[0]
        return reading_number(index, view.n_slices(), self._reading.get(view, 1))

    def set_slice(self, view: SliceView, index: int) -> None:
        if self.volume is None:
            return
        index = int(np.clip(index, 0, view.n_slices() - 1))
        cursor = self.cursor.copy()
        cursor[view.axes.slice_axis] = index
        self.set_cursor(cursor)

    def set_cursor(self, index) -> None:
        """Move the linked crosshair to a (z, y, x) index: every view shows the slice through it."""
        if self.volume is None:
            return
        shape = np.array(self.volume.array.shape)
        self.cursor = np.clip(np.rint(np.asarray(index, dtype=float)).astype(int), 0, shape - 1)
        for view in self.views:
            view.set_slice(int(self.cursor[view.axes.slice_axis]))
            view.set_crosshair(self.cursor)
        self.slider.blockSignals(True)
        self.slider.setValue(int(self.cursor[0]))
        self.slider.blockSignals(False)
        self._update_overlays()
        self.slice_changed.emit(int(self.cursor[0]), int(shape[0]))
        if self._hovered is not None:
            self._hovered.repeat_hover()

    def fit(self) -> None:
        for view in self.views:
            view.fit()

    def reset(self) -> None:
        """Fit, centre the crosshair and go back to the default window."""
        if self.volume is None:
            return
        self.fit()
        self.set_cursor(np.array(self.volume.array.shape) // 2)
        self.apply_default_window()

    def _on_cursor(self, index: np.ndarray | None, view: SliceView) -> None:
        self._hovered = view if index is not None else None
        if index is None or self.volume is None:
            self.cursor_info.emit(None)
            return
        voxel = np.clip(np.rint(index).astype(int), 0, np.array(self.volume.array.shape) - 1)
        self.cursor_info.emit(CursorInfo(
            index=voxel,
            patient_mm=self.volume.index_to_patient(*index),
            value=int(self.volume.array[tuple(voxel)]),
            is_hu=self.volume.is_hu,
            slice_index=int(voxel[0]),
            n_slices=int(self.volume.array.shape[0]),
        ))

    def _update_overlays(self) -> None:
        if self.volume is None:
            return
        info = self.volume.info
        patient = info.identity.patient_name.replace("^", " ").strip() or "(no name)"
        wl = f"W {self.window_width:.0f}  L {self.window_center:.0f}  {self.preset_name}"
        thickness = f"{info.slice_thickness_mm:g} mm" if info.slice_thickness_mm else "n/a"
        for view in self.views:
            n = view.n_slices()
            position = self.volume.index_to_patient(*self.cursor)
            axis_mm = reading_position_mm(position, axis_direction(self.volume, view.axes.slice_axis))
            view.set_overlay(
                tl=f"{patient}\n{info.identity.patient_id}\n{info.identity.study_date}",
                tr=f"{info.caption()}\n{wl}",
                bl=f"{view.title}  {self.slice_number(view.slice_index, view)}/{n}\nPos {axis_mm:.1f} mm",
                br=f"Thk {thickness}\nSp {self.volume.spacing_mm[view.axes.slice_axis]:.2f} mm" if view is self.views[0] else "",
            )
