"""What a radiologist reads of a lesion in one contrast phase, measured on its key slice.

A liver lesion is characterised by how it enhances against the liver around it across the phases
(LI-RADS for HCC: arterial hyperenhancement, then washout; hemangioma: peripheral nodules that fill
in and follow the blood pool; cyst: no enhancement in any phase; metastasis: rim enhancement, a dark
centre in the portal-venous phase). Per phase the numbers below say that much: the lesion's
attenuation and the liver ring's (medians, so noise, vessels and partial volume weigh little), their
difference, rim against core, the lesion's spread, the share of it brighter than the liver, and its
brightest tenth against the liver (enhancing nodules). `model.phase_reader` reads them.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: The measured numbers, in order (HU unless a share).
FEATURES: tuple[str, ...] = ("lesion_hu", "liver_hu", "lesion_minus_liver_hu", "rim_minus_core_hu", "lesion_sd_hu",
                             "share_above_liver", "p90_minus_liver_hu")
#: The liver ring: from `RING_GAP_MM` outside the outline (its edge is partial volume, or a capsule) to
#: `RING_OUTER_MM`; the rim: the outermost `RIM_MM` of the lesion.
RING_GAP_MM, RING_OUTER_MM, RIM_MM = 1.5, 5.0, 1.5
#: A lesion pixel this much above the liver ring counts as enhancing more than the liver.
ABOVE_LIVER_HU = 20.0


def _ellipse(radius_mm: float, spacing_yx: Sequence[float]) -> np.ndarray:
    ry = max(1, int(round(radius_mm / float(spacing_yx[0]))))
    rx = max(1, int(round(radius_mm / float(spacing_yx[1]))))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rx + 1, 2 * ry + 1))


def measure_lesion_enhancement(hu: np.ndarray, mask: np.ndarray, spacing_yx: Sequence[float]) -> np.ndarray:
    """The `FEATURES` of the lesion outlined by `mask` (bool (y, x)) on the HU slice `hu` (y, x) with
    pixel spacing `spacing_yx` (mm), float64. Raises ValueError for an empty outline."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the outline covers no pixel of the slice")
    values = np.asarray(hu, dtype=np.float64)
    m8 = mask.astype(np.uint8)
    near = cv2.dilate(m8, _ellipse(RING_GAP_MM, spacing_yx)).astype(bool)
    ring = cv2.dilate(m8, _ellipse(RING_OUTER_MM, spacing_yx)).astype(bool) & ~near
    core = cv2.erode(m8, _ellipse(RIM_MM, spacing_yx)).astype(bool)
    if core.sum() < 3:  # a lesion a few pixels across has no core distinct from its rim
        core = mask
    rim = mask & ~core
    lesion_values = values[mask]
    lesion = float(np.median(lesion_values))
    liver = float(np.median(values[ring])) if ring.any() else lesion
    rim_minus_core = float(np.median(values[rim]) - np.median(values[core])) if rim.any() else 0.0
    return np.array([lesion, liver, lesion - liver, rim_minus_core, float(lesion_values.std()),
                     float(np.mean(lesion_values > liver + ABOVE_LIVER_HU)),
                     float(np.percentile(lesion_values, 90)) - liver])


__all__ = ["ABOVE_LIVER_HU", "FEATURES", "RIM_MM", "RING_GAP_MM", "RING_OUTER_MM", "measure_lesion_enhancement"]
