"""Display-independent image operations: windowing, orientation labels, reformats (numpy/OpenCV only)."""
from __future__ import annotations

from liverview.imaging.orientation import direction_letters, view_axes
from liverview.imaging.window import CT_PRESETS, WindowPreset, apply_window, auto_window

__all__ = ["CT_PRESETS", "WindowPreset", "apply_window", "auto_window", "direction_letters", "view_axes"]
