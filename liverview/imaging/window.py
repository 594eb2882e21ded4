"""Window/level (VOI) presets and the linear windowing of DICOM PS3.3 C.11.2.1.2."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowPreset:
    """A named (0028,1050) Window Center / (0028,1051) Window Width pair, in HU."""

    name: str
    center: float
    width: float

    @property
    def levels(self) -> tuple[float, float]:
        """(black, white) display limits."""
        return (self.center - self.width / 2.0, self.center + self.width / 2.0)


#: Keys 1-4. Liver: the portal-venous optimum measured by readers for standard CT reconstructions
#: (W 173 / L 69, Eur J Radiol 2016;85:695-9), rounded; the others are the usual body presets.
CT_PRESETS: tuple[WindowPreset, ...] = (
    WindowPreset("Liver", 70.0, 170.0),
    WindowPreset("Abdomen", 40.0, 400.0),
    WindowPreset("Bone", 400.0, 1800.0),
    WindowPreset("Lung", -600.0, 1500.0),
)


def apply_window(values: np.ndarray, center: float, width: float, invert: bool = False) -> np.ndarray:
    """Map values to uint8 grey levels with the linear VOI function (black below, white above)."""
    width = max(float(width), 1.0)
    low = center - 0.5 - (width - 1.0) / 2.0
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (width - 1.0 if width > 1 else 1.0))
    out = np.clip(scaled, 0, 255).astype(np.uint8)
    return 255 - out if invert else out


def auto_window(values: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0) -> WindowPreset:
    """A window spanning the central percentiles: the sensible default for MR and other non-HU data."""
    sample = values[:: max(1, values.shape[0] // 8)] if values.ndim == 3 else values
    lo, hi = np.percentile(sample, [low_pct, high_pct])
    if hi <= lo:
        hi = lo + 1
    return WindowPreset("Auto", float((lo + hi) / 2.0), float(hi - lo))
