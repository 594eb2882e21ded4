"""The contrast phase of a CT series, told from its images and, where present, from its DICOM text.

The images decide when they can: the attenuation of the aorta, of the liver parenchyma and of the
enhanced veins inside the liver, found automatically on the slices where the liver is largest, places a
series in the enhancement curve (values from the literature; docs/contrast-phase.md cites them):

| phase | aorta (HU) | portal vein (HU) | liver (HU) |
|---|---|---|---|
| non-contrast | 35-55 | 35-50 | 45-65 |
| arterial (late arterial, ~35 s) | 250-400 | 125-165 | 65-90 |
| portal-venous (~70 s) | 150-220 | about the aorta's | 100-130 |
| delayed / equilibrium (3-5 min) | 100-150 | about the aorta's | 85-110 |

Unenhanced blood and an arterial blood pool far above a liver that has not yet taken up portal
contrast are clear from one series. After the arterial peak the values of the portal-venous and the
equilibrium phase, and of a late arterial phase with a modest bolus, overlap between patients: the
images then say "enhanced, not arterial", and the phase comes from the DICOM text (Series
Description, the delay after the Contrast/Bolus Start Time), else from the order of the study's
enhanced series in time (the first is portal-venous, a later one delayed; without acquisition times,
the one whose blood the contrast has washed out of), else it is the routine portal-venous phase.
Every decision records which of these decided and what the others said.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from dataclasses import dataclass, replace
from enum import Enum

import cv2
import numpy as np

from liverview.io.pixels import FrameDecodeError, needs_decoder
from liverview.io.process_pool import map_in_order, worker_count
from liverview.io.series import SeriesInfo
from liverview.progress import Cancelled
from liverview.io.volume import read_slice


class ContrastPhase(str, Enum):
    NON_CONTRAST = "non_contrast"
    ARTERIAL = "arterial"
    PORTAL_VENOUS = "portal_venous"
    DELAYED = "delayed"
    UNKNOWN = "unknown"

    @property
    def words(self) -> str:
        """The phase as a reader says it ("portal-venous")."""
        return _TITLES[self]


_TITLES = {ContrastPhase.NON_CONTRAST: "non-contrast", ContrastPhase.ARTERIAL: "arterial",
           ContrastPhase.PORTAL_VENOUS: "portal-venous", ContrastPhase.DELAYED: "delayed",
           ContrastPhase.UNKNOWN: "unknown phase"}


class DecidedBy(str, Enum):
    IMAGES = "images"
    #: The images show enhancement after the arterial peak; the DICOM text names the phase.
    IMAGES_AND_TEXT = "images_and_dicom_text"
    #: Enhanced after the arterial peak; the order of the study's series in time names the phase.
    IMAGES_AND_ORDER = "images_and_acquisition_order"
    #: Enhanced after the arterial peak; the study's other enhanced series, brighter blood, names it.
    IMAGES_OF_STUDY = "images_of_the_study"
    DESCRIPTION = "dicom_text"
    READER = "reader"
    NOTHING = "nothing"


def how_decided(decided_by: DecidedBy, reader: str = "") -> str:
    """What decided a phase, in brief ("text, images fit")."""
    # IMAGES_AND_TEXT: the text named the phase and the images do not contradict it; "images + text" read
    # as if the images had confirmed it.
    return {DecidedBy.IMAGES: "images", DecidedBy.IMAGES_AND_TEXT: "text, images fit",
            DecidedBy.IMAGES_AND_ORDER: "images + timing", DecidedBy.IMAGES_OF_STUDY: "images of the study",
            DecidedBy.DESCRIPTION: "text only", DecidedBy.READER: f"set by {reader}",
            DecidedBy.NOTHING: "undetermined"}[decided_by]


# Decision boundaries on the aorta (A) and liver (L) attenuation, from the table above: blood below
# 90 HU is unenhanced; A - L of 130 HU or more is an arterial blood pool over a liver that has not yet
# taken up portal contrast.
UNENHANCED_BLOOD_MAX_HU = 90.0
ARTERIAL_GAP_MIN_HU = 130.0
#: Two enhanced series of one study this far apart in time are two phases (portal-venous, then delayed).
PHASE_SEPARATION_S = 60.0
#: Without acquisition times: an enhanced series whose aorta is this much dimmer than another enhanced
#: series' of the study was acquired after the contrast washed out of the blood (aortic attenuation
#: falls steadily after the first pass). Well above what separates two reconstructions of one
#: acquisition (thickness, kernel: a few HU), well below the portal-venous to equilibrium fall.
WASHOUT_MIN_HU = 25.0
#: The portal vein catches up with the aorta after the arterial phase: late arterial aorta 290-360 HU
#: over a portal vein of 145 +- 20 HU [R1], a gap of at least 125 HU, where the portal-venous aorta
#: (157-165 HU [G1]) and portal vein are one blood pool. Veins inside the liver less than half that
#: smallest arterial gap below the aorta are venous blood that has caught up: not the arterial peak,
#: whatever the liver (a fatty liver enhances to a low value in every phase).
VENOUS_CATCH_UP_MAX_GAP_HU = 60.0
#: An enhanced vein inside the liver: this much brighter than the parenchyma, at least 4 mm across,
#: and as many of them on the measured slices before their value counts.
VEIN_ABOVE_LIVER_HU = 30.0
VEIN_MIN_DIAMETER_MM = 4.0
MIN_VEINS = 3
#: Plausible liver parenchyma in any phase: severe steatosis reaches about -3 HU before contrast (40 % fat
#: [F2]), and the lower bound leaves room for such a liver's noise (at -10 a -2 HU liver under 15 HU of
#: noise broke into pieces and was not found); iron or amiodarone up to 140.
LIVER_RANGE_HU = (-30.0, 170.0)

#: Slices read to find the liver (evenly over the series) and slices measured (where it is largest).
SAMPLED_SLICES = 24
MEASURED_SLICES = 5
#: A liver cross-section smaller than this is not measured (the dome or the tip).
MIN_LIVER_AREA_MM2 = 3000.0


@dataclass(frozen=True)
class Enhancement:
    """What the images show: medians over the measured slices, None where a structure was not found."""

    aorta_hu: float | None
    liver_hu: float | None
    #: Indices (z) of the slices measured.
    slices: tuple[int, ...] = ()
    note: str = ""
    #: Image noise: the standard deviation of the liver parenchyma's pixels (HU), robust to vessels.
    noise_hu: float | None = None
    #: The enhanced veins inside the liver (`_vein_values`): the portal vein's branches and, once they
    #: fill, the hepatic veins; None where fewer than `MIN_VEINS` stand out from the parenchyma.
    portal_vein_hu: float | None = None


@dataclass(frozen=True)
class PhaseDecision:
    """A series' phase and how it was decided; `evidence()` is what liverview-inspect --json prints."""

    phase: ContrastPhase
    decided_by: DecidedBy
    summary: str
    enhancement: Enhancement | None = None
    text_phase: ContrastPhase | None = None
    text_reason: str = ""
    delay_s: float | None = None
    reader: str = ""
    #: What the images alone said ("images: ..."), the start of `summary` where they were read.
    images_said: str = ""

    def caption(self) -> str:
        """"Portal-venous (images)": the phase and, in brief, what decided it (the evidence says more)."""
        return f"{self.phase.words.capitalize()} ({how_decided(self.decided_by, self.reader)})"

    def evidence(self) -> dict:
        e = self.enhancement
        return {
            "decided_by": self.decided_by.value,
            "summary": self.summary,
            "aorta_hu": None if e is None or e.aorta_hu is None else round(e.aorta_hu, 1),
            "liver_hu": None if e is None or e.liver_hu is None else round(e.liver_hu, 1),
            "portal_vein_hu": None if e is None or e.portal_vein_hu is None else round(e.portal_vein_hu, 1),
            "noise_hu": None if e is None or e.noise_hu is None else round(e.noise_hu, 1),
            "slices_measured": [] if e is None else list(e.slices),
            "description_phase": None if self.text_phase is None else self.text_phase.value,
            "description_evidence": self.text_reason,
            "delay_after_bolus_s": self.delay_s,
            **({"reader": self.reader} if self.reader else {}),
        }


# --- the images -----------------------------------------------------------------------------------


def _disk(radius_px: float) -> np.ndarray:
    r = max(1, int(round(radius_px)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask, dtype=bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


@dataclass(frozen=True)
class _Frame:
    """Patient directions on the image: per pixel, mm towards the patient's left and back."""

    left_mm: np.ndarray
    back_mm: np.ndarray


def _patient_frame(shape: tuple[int, int], pixel_mm: tuple[float, float], row_direction: Sequence[float],
                   column_direction: Sequence[float]) -> _Frame:
    # A row and a column broadcast against each other: the same float32 values as full (rows, columns)
    # grids, without building four of them (16 -> 2 ms for two 512² frames).
    x_mm = np.arange(shape[1], dtype=np.float32)[np.newaxis, :] * np.float32(pixel_mm[1])
    y_mm = np.arange(shape[0], dtype=np.float32)[:, np.newaxis] * np.float32(pixel_mm[0])
    # LPS: +x is the patient's left, +y the back.
    left = x_mm * np.float32(row_direction[0]) + y_mm * np.float32(column_direction[0])
    back = x_mm * np.float32(row_direction[1]) + y_mm * np.float32(column_direction[1])
    return _Frame(left, back)


def _filled(mask: np.ndarray) -> np.ndarray:
    """`mask` with every hole it encloses filled."""
    filled = mask.astype(np.uint8)
    contours, _ = cv2.findContours(filled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def _body(hu: np.ndarray) -> np.ndarray:
    return _filled(_largest_component(hu > -500))


def find_liver(hu: np.ndarray, pixel_mm: tuple[float, float], frame: _Frame,
               body: np.ndarray | None = None) -> np.ndarray:
    """The liver's cross-section on one axial slice: the largest soft-tissue region on the patient's
    right once vessels, bowel walls and muscle layers are opened away (8 mm); empty when none. `body`
    is the slice's `_body` when the caller has it."""
    body = _body(hu) if body is None else body
    if body.sum() * pixel_mm[0] * pixel_mm[1] < 20000:
        return np.zeros_like(body)
    smooth = cv2.GaussianBlur(hu.astype(np.float32), (0, 0), 1.0 / min(pixel_mm))
    centre_left = float(frame.left_mm[body].mean())
    tissue = body & (smooth > LIVER_RANGE_HU[0]) & (smooth < LIVER_RANGE_HU[1]) & (frame.left_mm < centre_left)
    opened = cv2.morphologyEx(tissue.astype(np.uint8), cv2.MORPH_OPEN, _disk(8.0 / min(pixel_mm))).astype(bool)
    liver = _largest_component(opened)
    if liver.sum() * pixel_mm[0] * pixel_mm[1] < MIN_LIVER_AREA_MM2:
        return np.zeros_like(body)
    return liver


def _liver_hu(hu: np.ndarray, liver: np.ndarray, pixel_mm: tuple[float, float]) -> float:
    """The parenchyma's attenuation: the mode of the lightly smoothed values inside the outline, which
    vessels, lesions and a strip of neighbouring muscle caught in it do not move."""
    smooth = cv2.GaussianBlur(hu.astype(np.float32), (0, 0), 1.0 / min(pixel_mm))
    values = smooth[liver]
    counts, edges = np.histogram(values, bins=np.arange(LIVER_RANGE_HU[0], LIVER_RANGE_HU[1] + 5.0, 5.0))
    counts = np.convolve(counts, np.ones(3) / 3.0, mode="same")
    peak = int(np.argmax(counts))
    near = values[np.abs(values - (edges[peak] + 2.5)) < 20.0]
    return float(np.median(near)) if near.size else float(np.median(values))


@dataclass(frozen=True)
class _LiverCrop:
    """One slice cut to the liver's bounding box, with a margin wide enough that every filter below sees
    the same neighbours at the liver's pixels as on the whole slice; `core` is the outline eroded by 5 mm
    (away from its edge: vessels entering it, the IVC, bowel and ribs beside it)."""

    hu: np.ndarray
    liver: np.ndarray
    core: np.ndarray

    @classmethod
    def cut(cls, hu: np.ndarray, liver: np.ndarray, pixel_mm: tuple[float, float]) -> _LiverCrop | None:
        rows, cols = np.nonzero(liver)
        if rows.size == 0:
            return None
        margin = _noise_window(pixel_mm) // 2 + 2
        r0, c0 = max(0, int(rows.min()) - margin), max(0, int(cols.min()) - margin)
        r1, c1 = int(rows.max()) + 1 + margin, int(cols.max()) + 1 + margin
        cut = liver[r0:r1, c0:c1]
        core = cv2.erode(cut.astype(np.uint8), _disk(5.0 / min(pixel_mm))).astype(bool)
        return cls(hu[r0:r1, c0:c1].astype(np.float32), cut, core)


def _noise_window(pixel_mm: tuple[float, float]) -> int:
    """The local median's window for the noise: 7 mm, odd, at least 3 pixels."""
    return max(3, int(round(7.0 / min(pixel_mm))) | 1)


def _noise_hu(crop: _LiverCrop, pixel_mm: tuple[float, float]) -> float:
    """Noise SD inside the liver: the median absolute deviation (x 1.4826) of the pixels from their 7 mm
    local median, on the outline eroded by 5 mm, so vessels, lesions and edges weigh little."""
    size = _noise_window(pixel_mm)
    local = cv2.blur(crop.hu, (size, size))
    residual = (crop.hu - local)[crop.core if crop.core.sum() > 200 else crop.liver]
    return float(1.4826 * np.median(np.abs(residual - np.median(residual))))


def _vein_values(crop: _LiverCrop, pixel_mm: tuple[float, float], liver_hu: float) -> list[float]:
    """The median HU of each enhanced vein inside the liver's eroded outline: regions
    `VEIN_ABOVE_LIVER_HU` above the parenchyma and at least `VEIN_MIN_DIAMETER_MM` across, each measured
    on its core so that partial volume at its wall weighs little. Unenhanced hepatic veins in the
    arterial phase stay below the parenchyma and are not counted; one value per vein, so that one large
    bright lesion does not outweigh the vessels."""
    mm = min(pixel_mm)
    smooth = cv2.GaussianBlur(crop.hu, (0, 0), 0.7 / mm)
    candidates = crop.core & (smooth >= liver_hu + VEIN_ABOVE_LIVER_HU) & (smooth < 600)
    # Noise specks away (an opening 3 mm across); the area test below keeps veins of 4 mm and more.
    bright = cv2.morphologyEx(candidates.astype(np.uint8), cv2.MORPH_OPEN, _disk(1.5 / mm))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    min_area = math.pi * (VEIN_MIN_DIAMETER_MM / 2) ** 2 / (pixel_mm[0] * pixel_mm[1])
    inner_kernel = _disk(1.0 / mm)
    values = []
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] < min_area:
            continue
        vein = labels == i
        inner = cv2.erode(vein.astype(np.uint8), inner_kernel).astype(bool)
        values.append(float(np.median(crop.hu[inner if inner.sum() >= 5 else vein])))
    return values


def _spine(hu: np.ndarray, body: np.ndarray, frame: _Frame, pixel_mm: tuple[float, float]) -> np.ndarray:
    """The bone behind the body's centre near the midline (vertebra, rib heads), gaps of up to 5 mm
    closed and enclosed marrow filled; empty when there is none."""
    centre_left = float(frame.left_mm[body].mean())
    centre_back = float(frame.back_mm[body].mean())
    cortical = (hu > 450) & body & (np.abs(frame.left_mm - centre_left) < 40.0) & (frame.back_mm > centre_back - 20.0)
    closed = cv2.morphologyEx(cortical.astype(np.uint8), cv2.MORPH_CLOSE, _disk(2.5 / min(pixel_mm)))
    contours, _ = cv2.findContours(closed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(closed, contours, -1, 1, thickness=cv2.FILLED)
    return closed.astype(bool)


def find_aorta(hu: np.ndarray, pixel_mm: tuple[float, float], frame: _Frame,
               body: np.ndarray | None = None) -> tuple[float, tuple[int, int]] | None:
    """The aorta's attenuation on one axial slice and the (row, column) of its centre; None when no
    aorta is found.

    The aorta is the round, homogeneous, isolated blob in front of and beside the vertebra. Thresholds
    sweep down from bright to dim; at each, a connected region counts when it is 12-36 mm across,
    round, holds no bone, touches neither the vertebra nor the search box's edge. The brightest
    threshold that shows one wins: an enhanced aorta separates from its surroundings first, the
    vertebral body stays joined to its posterior elements.
    """
    body = _body(hu) if body is None else body
    if not body.any():
        return None
    spine = _spine(hu, body, frame, pixel_mm)
    if spine.sum() * pixel_mm[0] * pixel_mm[1] < 150.0:
        return None
    spine_left = float(frame.left_mm[spine].mean())
    front = float(frame.back_mm[spine].min())
    zone = (body & (frame.back_mm > front - 45.0) & (frame.back_mm < front + 40.0)
            & (frame.left_mm > spine_left - 35.0) & (frame.left_mm < spine_left + 45.0))
    rows, cols = np.nonzero(zone)
    if rows.size == 0:
        return None
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    crop = hu[r0:r1, c0:c1].astype(np.float32)
    smooth = cv2.GaussianBlur(crop, (0, 0), 0.8 / min(pixel_mm))
    pixel_area = pixel_mm[0] * pixel_mm[1]
    blocked = cv2.dilate(spine[r0:r1, c0:c1].astype(np.uint8), _disk(2.0 / min(pixel_mm))).astype(bool)
    blocked |= ~zone[r0:r1, c0:c1]
    for threshold in range(450, 10, -15):
        n, labels, stats, centroids = cv2.connectedComponentsWithStats((smooth > threshold).astype(np.uint8), connectivity=4)
        found: list[tuple[float, tuple[int, int]]] = []
        for i in range(1, n):
            x, y, w, h, area = stats[i]
            if not (math.pi * 36.0 <= area * pixel_area <= math.pi * 324.0):
                continue
            if x == 0 or y == 0 or x + w >= crop.shape[1] or y + h >= crop.shape[0]:
                continue
            blob = labels == i
            if (blocked & blob).any() or (smooth[blob] > 600).any():
                continue
            contours, _ = cv2.findContours(blob.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            perimeter = cv2.arcLength(contours[0], True)
            if perimeter <= 0 or 4 * math.pi * area / perimeter ** 2 < 0.65:
                continue
            core = cv2.erode(blob.astype(np.uint8), _disk(1.5 / min(pixel_mm))).astype(bool)
            values = crop[core if core.sum() >= 10 else blob]
            cy, cx = centroids[i]
            found.append((float(np.median(values)), (int(r0 + cx), int(c0 + cy))))
        if found:
            return max(found, key=lambda f: f[0])
    # No round blob: an unenhanced aorta can merge with the crura and psoas at these levels. If nothing
    # outside the bone in front of the spine is brighter than unenhanced blood, no blood there is enhanced.
    kernel = _disk(5.0 / min(pixel_mm)).astype(np.float32)
    kernel /= kernel.sum()
    mean = cv2.filter2D(crop, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    soft = ~blocked & ~cv2.dilate((crop > 450).astype(np.uint8), _disk(6.0 / min(pixel_mm))).astype(bool) & (mean > -20)
    if soft.any():
        row, col = np.unravel_index(int(np.argmax(np.where(soft, mean, -np.inf))), mean.shape)
        if mean[row, col] < UNENHANCED_BLOOD_MAX_HU:
            return float(mean[row, col]), (int(r0 + row), int(c0 + col))
    return None


#: Body and liver are found on slices averaged down to about this pixel size (mm): an 8 mm opening
#: and the connected regions of a 512 x 512 slice cost four times what a quarter of the pixels do, and
#: outlines a few mm coarser do not move the parenchyma's mode. HU are measured at full resolution.
OUTLINE_PIXEL_MM = 1.5


def _outline_grid(shape: tuple[int, int], pixel_mm: tuple[float, float]) -> tuple[tuple[int, int], tuple[float, float]]:
    """(rows, columns) and pixel size (mm) of the grid body and liver are found on."""
    scale = max(1, int(round(OUTLINE_PIXEL_MM / min(pixel_mm))))
    small = (max(1, shape[0] // scale), max(1, shape[1] // scale))
    return small, (pixel_mm[0] * shape[0] / small[0], pixel_mm[1] * shape[1] / small[1])


class _Outliner:
    """Body and liver outlines of the axial slices of one geometry, found on a grid of
    `OUTLINE_PIXEL_MM` and returned at full resolution."""

    def __init__(self, shape: tuple[int, int], pixel_mm: tuple[float, float], row_direction: Sequence[float],
                 column_direction: Sequence[float]) -> None:
        self.shape, self.pixel_mm = shape, pixel_mm
        self.frame = _patient_frame(shape, pixel_mm, row_direction, column_direction)
        self.small, self.small_mm = _outline_grid(shape, pixel_mm)
        self.small_frame = self.frame if self.small == shape else _patient_frame(self.small, self.small_mm,
                                                                                    row_direction, column_direction)

    def _full(self, mask: np.ndarray) -> np.ndarray:
        if mask.shape == self.shape:
            return mask
        rows, cols = self.shape
        return cv2.resize(mask.astype(np.uint8), (cols, rows), interpolation=cv2.INTER_NEAREST).astype(bool)

    def _coarse(self, hu: np.ndarray) -> np.ndarray:
        return hu if self.small == self.shape else cv2.resize(hu.astype(np.float32), self.small[::-1],
                                                               interpolation=cv2.INTER_AREA)

    def outline(self, hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(body, liver) of one HU slice."""
        coarse = self._coarse(hu)
        body = _body(coarse)
        return self._full(body), self._full(find_liver(coarse, self.small_mm, self.small_frame, body))

    def measure(self, slices: Sequence[np.ndarray], outlines: Sequence[tuple[np.ndarray, np.ndarray]],
                indices: Sequence[int]) -> Enhancement:
        """Liver, noise and aorta on the `MEASURED_SLICES` outlined slices where the liver is largest."""
        areas = np.array([liver.sum() for _, liver in outlines], dtype=float)
        if not areas.any():
            return Enhancement(None, None, (), "no liver found on the sampled slices")
        best = [int(i) for i in np.argsort(-areas)[:MEASURED_SLICES] if areas[i] > 0]
        pixel_mm = self.pixel_mm

        def search_aortas() -> list[tuple[float, tuple[int, int]] | None]:
            return [find_aorta(slices[i], pixel_mm, self.frame, outlines[i][0]) for i in best]

        # The aorta search beside the liver's values: they take about as long, their OpenCV and numpy calls
        # release the GIL, and a reading waits on this step after its last slice, when the workers are idle
        # (measured: the 100-slice JPEG-LS `liverview-inspect --load` 0.49 -> 0.47 s).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="aorta-search") as pool:
            searched = pool.submit(search_aortas)
            livers = [_liver_hu(slices[i], outlines[i][1], pixel_mm) for i in best]
            liver = float(np.median(livers))
            crops = [_LiverCrop.cut(slices[i], outlines[i][1], pixel_mm) for i in best]
            cut = [(crop, level) for crop, level in zip(crops, livers) if crop is not None]
            noise = float(np.median([_noise_hu(crop, pixel_mm) for crop, _ in cut]))
            veins = [v for crop, level in cut for v in _vein_values(crop, pixel_mm, level)]
            found = searched.result()
        aortas = [a[0] for a in found if a is not None]
        aorta = float(np.median(aortas)) if aortas else None
        return Enhancement(aorta, liver, tuple(sorted(int(indices[i]) for i in best)),
                           "" if aortas else "no aorta found in front of the spine", noise_hu=noise,
                           portal_vein_hu=float(np.median(veins)) if len(veins) >= MIN_VEINS else None)


def share_on_liver(hu: np.ndarray, mask: np.ndarray, pixel_mm: tuple[float, float], row_direction: Sequence[float],
                   column_direction: Sequence[float]) -> float | None:
    """How much of the outline `mask` on this axial slice lies on the liver: 0 outside the body; the share
    of it on the liver `find_liver` finds (with what that encloses, lesions and vessels, filled in). None
    where nothing can be told: no liver found on the slice (the dome, the tip), or an outline centred in
    front of the body's centre on the patient's left, where the left lobe lies and `find_liver`, which
    measures parenchyma on the right, does not look."""
    outliner = _Outliner(hu.shape, pixel_mm, row_direction, column_direction)
    body, liver = outliner.outline(hu)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    r, c = int(round(rows.mean())), int(round(cols.mean()))
    if not body[r, c]:
        return 0.0
    frame = outliner.frame
    left_front = (frame.left_mm[r, c] > float(frame.left_mm[body].mean())
                  and frame.back_mm[r, c] < float(frame.back_mm[body].mean()))
    if not liver.any() or left_front:
        return None
    return float((_filled(liver) & mask).sum() / rows.size)


def measure_enhancement(slices: np.ndarray, indices: Sequence[int], pixel_mm: tuple[float, float],
                        row_direction: Sequence[float], column_direction: Sequence[float]) -> Enhancement:
    """Aorta and liver attenuation from axial HU slices (k, y, x) whose series indices are `indices`."""
    outliner = _Outliner(slices.shape[1:], pixel_mm, row_direction, column_direction)
    return outliner.measure(list(slices), [outliner.outline(hu) for hu in slices], indices)


class ImagePattern(str, Enum):
    NON_CONTRAST = "non_contrast"
    ARTERIAL = "arterial"
    #: Blood and liver enhanced, no arterial gap: late arterial, portal-venous or equilibrium.
    ENHANCED = "enhanced"
    UNREADABLE = "unreadable"


def pattern_from_enhancement(e: Enhancement) -> tuple[ImagePattern, str]:
    """What the measured attenuation shows, with the reason in words."""
    if e.aorta_hu is None or e.liver_hu is None:
        return ImagePattern.UNREADABLE, e.note or "aorta or liver not found"
    a, liver = e.aorta_hu, e.liver_hu
    values = f"aorta {a:.0f} HU, liver {liver:.0f} HU"
    if a < UNENHANCED_BLOOD_MAX_HU:
        return ImagePattern.NON_CONTRAST, f"{values}: unenhanced blood (< {UNENHANCED_BLOOD_MAX_HU:.0f} HU)"
    gap = a - liver
    vein = e.portal_vein_hu
    if vein is not None:
        values += f", veins in the liver {vein:.0f} HU"
    if gap >= ARTERIAL_GAP_MIN_HU:
        if vein is not None and _veins_caught_up(e):
            return ImagePattern.ENHANCED, (f"{values}: blood pool {gap:.0f} HU above the liver, but the veins in the "
                                           f"liver have caught up with the aorta ({a - vein:.0f} HU below it, "
                                           f"< {VENOUS_CATCH_UP_MAX_GAP_HU:.0f}): a venous phase of a liver that "
                                           "enhances little, not the arterial peak")
        return ImagePattern.ARTERIAL, f"{values}: blood pool {gap:.0f} HU above the liver (>= {ARTERIAL_GAP_MIN_HU:.0f})"
    return ImagePattern.ENHANCED, (f"{values}: enhanced blood and liver, blood pool {gap:.0f} HU above the liver "
                                   f"(< {ARTERIAL_GAP_MIN_HU:.0f}: not the arterial peak)")


def _veins_caught_up(e: Enhancement) -> bool:
    """The veins in the liver are less than `VENOUS_CATCH_UP_MAX_GAP_HU` below the aorta."""
    return (e.aorta_hu is not None and e.portal_vein_hu is not None
            and e.aorta_hu - e.portal_vein_hu < VENOUS_CATCH_UP_MAX_GAP_HU)


def sample_indices(n_slices: int, count: int = SAMPLED_SLICES) -> list[int]:
    """Evenly spread slice indices (all when there are few)."""
    if n_slices <= count:
        return list(range(n_slices))
    return sorted({int(round(v)) for v in np.linspace(0, n_slices - 1, count)})


# --- the text -------------------------------------------------------------------------------------

_TEXT_PATTERNS: tuple[tuple[ContrastPhase, re.Pattern[str]], ...] = (
    (ContrastPhase.NON_CONTRAST, re.compile(
        r"\b(non[- ]?con(trast)?|w/?o\b|without|pre[- ]?(contrast|con)?\b|unenhanced|plain|native|nativ|nc\b|"
        r"sans|noncontrast|precontrast)", re.I)),
    (ContrastPhase.ARTERIAL, re.compile(
        r"\b(arterial|arteriel|art\b|h?ap\b|lap\b|eap\b|early art|late art|angio)", re.I)),
    (ContrastPhase.PORTAL_VENOUS, re.compile(r"\b(portal|pvp?\b|p-?v\b|venous|ven\b|veneuse|portale)", re.I)),
    (ContrastPhase.DELAYED, re.compile(r"\b(delay(ed)?|equilibri|eq\b|late\b(?! art)|[2-9] ?min|1[05] ?min|spät)", re.I)),
)

#: Delays after the bolus start (s) that name a phase; between them the delay decides nothing.
DELAY_WINDOWS_S = ((ContrastPhase.ARTERIAL, 15.0, 50.0), (ContrastPhase.PORTAL_VENOUS, 55.0, 110.0),
                   (ContrastPhase.DELAYED, 150.0, 1200.0))


def phase_from_text(description: str) -> tuple[ContrastPhase | None, str]:
    """The phase a Series Description names, if exactly one; with the words that said it."""
    found = [(phase, m.group(0)) for phase, pattern in _TEXT_PATTERNS if (m := pattern.search(description or ""))]
    if len(found) != 1:
        return None, ("" if not found else
                      f"description {description!r} names several phases ({', '.join(p.words for p, _ in found)})")
    phase, words = found[0]
    return phase, f"description {description!r} says {words!r}"


def _seconds(dicom_time: str) -> float | None:
    m = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d+)?", (dicom_time or "").strip())
    if not m:
        return None
    h, mi, s, frac = m.groups()
    return int(h) * 3600 + int(mi or 0) * 60 + int(s or 0) + float(frac or 0)


def delay_after_bolus_s(bolus_start: str, acquisition: str) -> float | None:
    """(0018,1042) Contrast/Bolus Start Time to (0008,0032) Acquisition Time, in seconds."""
    start, acq = _seconds(bolus_start), _seconds(acquisition)
    if start is None or acq is None:
        return None
    delay = acq - start
    return delay + 86400 if delay < -43200 else delay


def phase_from_delay(delay_s: float | None) -> ContrastPhase | None:
    if delay_s is None:
        return None
    for phase, lo, hi in DELAY_WINDOWS_S:
        if lo <= delay_s <= hi:
            return phase
    return None


# --- the decision ---------------------------------------------------------------------------------


def decide_contrast_phase(info: SeriesInfo, enhancement: Enhancement | None) -> PhaseDecision:
    """One series on its own: the images where they are clear, the DICOM text for an enhanced series
    after the arterial peak, and portal-venous (the routine phase) when nothing names another.
    `decide_study_phases` then orders a study's enhanced series in time."""
    text_phase, text_reason = phase_from_text(info.identity.series_description)
    delay = delay_after_bolus_s(info.image.contrast_start_time, info.image.acquisition_time)
    delay_phase = phase_from_delay(delay)
    if text_phase is None and delay_phase is not None:
        text_phase, text_reason = delay_phase, f"{delay:.0f} s after the bolus start (0018,1042)"
    if enhancement is None:
        pattern, why = ImagePattern.UNREADABLE, ("images not measured" if info.plane == "axial"
                                                 else f"images not measured ({info.plane} series)")
    else:
        pattern, why = pattern_from_enhancement(enhancement)
    said = f"images: {why}"
    common: dict[str, Any] = dict(enhancement=enhancement, text_phase=text_phase, text_reason=text_reason,
                                  delay_s=None if delay is None else round(delay, 1), images_said=said)
    if info.modality != "CT" or not info.units.is_hu:
        return PhaseDecision(ContrastPhase.UNKNOWN, DecidedBy.NOTHING, "not a CT series in HU", **common)
    text_note = f"the DICOM text says {text_phase.words} ({text_reason})" if text_phase is not None else ""
    if pattern in (ImagePattern.NON_CONTRAST, ImagePattern.ARTERIAL):
        phase = ContrastPhase(pattern.value)
        summary = said
        if text_phase is not None:
            summary += "; " + (f"{text_note}, the images decide" if text_phase is not phase else f"{text_note} too")
        return PhaseDecision(phase, DecidedBy.IMAGES, summary, **common)
    if pattern is ImagePattern.ENHANCED:
        if text_phase is ContrastPhase.ARTERIAL and enhancement is not None and _veins_caught_up(enhancement):
            # An arterial phase shows veins as bright as the aorta only with early portal inflow (an
            # arterioportal shunt, common in cirrhosis); the images cannot tell, so the text decides alone.
            return PhaseDecision(text_phase, DecidedBy.DESCRIPTION,
                                 f"{said}; {text_note}; the images look later than an arterial phase (veins in the "
                                 f"liver {enhancement.portal_vein_hu:.0f} HU against the aorta's "
                                 f"{enhancement.aorta_hu:.0f}), so the text alone decides: check it", **common)
        if text_phase is not None and text_phase is not ContrastPhase.NON_CONTRAST:
            fits = "a late arterial phase, after the peak" if text_phase is ContrastPhase.ARTERIAL else "it"
            return PhaseDecision(text_phase, DecidedBy.IMAGES_AND_TEXT, f"{said}; {text_note}; the images fit {fits}",
                                 **common)
        summary = f"{said}; portal-venous, the routine phase, as nothing names another"
        if text_phase is not None:
            summary += f" ({text_note}, which the enhanced blood contradicts)"
        return PhaseDecision(ContrastPhase.PORTAL_VENOUS, DecidedBy.IMAGES, summary, **common)
    if text_phase is not None:
        return PhaseDecision(text_phase, DecidedBy.DESCRIPTION, f"{text_note}; {why}", **common)
    return PhaseDecision(ContrastPhase.UNKNOWN, DecidedBy.NOTHING, f"{why}; no phase in the DICOM text", **common)


def decide_study_phases(series: Sequence[tuple[SeriesInfo, PhaseDecision]]) -> list[PhaseDecision]:
    """Order in time the enhanced series of each study and Frame of Reference that only the images
    placed ("enhanced, not arterial", so far portal-venous). With their acquisition times (not all the
    same): the first is portal-venous, one acquired at least `PHASE_SEPARATION_S` later delayed.
    Without: one whose aorta is at least `WASHOUT_MIN_HU` dimmer than the brightest portal-venous or
    delayed series of the study (however that one was placed: its text may name it) is delayed."""
    out = [decision for _, decision in series]
    groups: dict[tuple[str, str], list[tuple[float | None, int]]] = {}
    after_peak: dict[tuple[str, str], list[int]] = {}
    for index, (info, decision) in enumerate(series):
        study = (info.study_uid, info.frame_of_reference_uid)
        if decision.decided_by is DecidedBy.IMAGES and decision.phase is ContrastPhase.PORTAL_VENOUS:
            groups.setdefault(study, []).append((_seconds(info.image.acquisition_time), index))
        if decision.phase in (ContrastPhase.PORTAL_VENOUS, ContrastPhase.DELAYED):
            after_peak.setdefault(study, []).append(index)
    for study, members in groups.items():
        times = [when for when, _ in members]
        if None not in times and len(set(times)) > 1:
            _order_by_time([(when, index) for when, index in members if when is not None], out)
        else:
            names = {index: series[index][0].describe() for index in after_peak[study]}
            _order_by_washout([index for _, index in members], after_peak[study], names, out)
    return out


def _order_by_time(members: list[tuple[float, int]], out: list[PhaseDecision]) -> None:
    members.sort()
    first_time = members[0][0]
    for when, index in members[1:]:
        if when - first_time >= PHASE_SEPARATION_S:
            d = out[index]
            out[index] = replace(d, phase=ContrastPhase.DELAYED, decided_by=DecidedBy.IMAGES_AND_ORDER,
                                 summary=f"{d.images_said}; acquired {when - first_time:.0f} s after the "
                                         "study's first enhanced series: delayed")


def _order_by_washout(members: list[int], references: list[int], names: Mapping[int, str],
                      out: list[PhaseDecision]) -> None:
    """`members` (placed by the images alone) dimmer than the brightest of `references` are delayed; the
    summary names that series and what placed it (`names`: each reference's description)."""
    aortas = {i: e.aorta_hu for i in references if (e := out[i].enhancement) is not None and e.aorta_hu is not None}
    if len(aortas) < 2:
        return
    top = max(aortas, key=lambda i: aortas[i])
    placed = "its images" if out[top].decided_by is DecidedBy.IMAGES else "its DICOM text"
    for index, aorta in aortas.items():
        if index not in members:
            continue
        if aortas[top] - aorta >= WASHOUT_MIN_HU:
            d = out[index]
            out[index] = replace(d, phase=ContrastPhase.DELAYED, decided_by=DecidedBy.IMAGES_OF_STUDY,
                                 summary=f"{d.images_said}; the aorta is {aortas[top] - aorta:.0f} HU dimmer than in "
                                         f"'{names[top]}', the study's brightest {out[top].phase.words} series "
                                         f"(by {placed}; no acquisition times to order them): contrast washed out "
                                         "since, delayed")


class EnhancementSampler:
    """`measure_series` a slice at a time, for a series being read: `add(z, hu)` outlines a sampled slice
    when it arrives (while the worker processes decode the others), `result()` measures the rest. The
    slices are kept by reference: the caller must not change them before `result()`."""

    def __init__(self, info: SeriesInfo) -> None:
        measurable = info.plane == "axial" and info.units.is_hu and info.modality == "CT" and info.n_images >= 3
        self.indices: tuple[int, ...] = tuple(sample_indices(info.n_images)) if measurable else ()
        orientation = info.orientation or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        # Only for a series it measures: a localizer, a SEG or an MR series costs nothing.
        self._outliner = _Outliner((info.rows, info.columns), info.pixel_spacing_mm, orientation[:3],
                                   orientation[3:6]) if measurable else None
        self._taken: dict[int, tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]] = {}

    def add(self, z: int, hu: np.ndarray) -> None:
        """Slice `z` has been read; a no-op unless it is one of `indices`."""
        if self._outliner is not None and z in self.indices and z not in self._taken:
            self._taken[z] = (hu, self._outliner.outline(hu))

    @property
    def complete(self) -> bool:
        """Every sampled slice was added (a slice that could not be decoded never is)."""
        return len(self._taken) == len(self.indices)

    def result(self) -> Enhancement | None:
        """The series' enhancement once `complete`; None for a series the images cannot tell (not axial,
        not HU, too few slices)."""
        if self._outliner is None:
            return None
        if not self.complete:
            raise ValueError(f"{len(self.indices) - len(self._taken)} sampled slice(s) were not added")
        taken = [self._taken[z] for z in self.indices]
        return self._outliner.measure([hu for hu, _ in taken], [outline for _, outline in taken], self.indices)


def measure_series(info: SeriesInfo, read: Callable[[int], np.ndarray]) -> Enhancement | None:
    """Measure an axial HU series through `read(z)` (a loaded array's slice, or a file read); None for a
    series the images cannot tell (not axial, not HU, too few slices)."""
    sampler = EnhancementSampler(info)
    for z in sampler.indices:
        sampler.add(z, read(z))
    return sampler.result()


def _array_reader(array: np.ndarray) -> Callable[[int], np.ndarray]:
    """Slices of a loaded volume's array."""
    return lambda z: array[z]


def detect_series_phases(infos: Sequence[SeriesInfo], volumes: dict[str, np.ndarray] | None = None,
                         should_stop: Callable[[], bool] | None = None,
                         measured: Mapping[str, Enhancement | None] | None = None) -> dict[str, PhaseDecision]:
    """The phase of every series (by `SeriesInfo.key`): as `measured[key]` while it was read (an
    `EnhancementSampler`'s result), else measured on `SAMPLED_SLICES` slices read from `volumes[key]`
    when loaded, else from the files (by the worker processes when there are several such series); then
    ordered within each study."""
    volumes = volumes or {}
    measured = measured or {}
    from_files = [info for info in infos if info.key not in volumes and info.key not in measured]
    from_workers: Iterator[Enhancement | None] | None = None
    # Worker processes for several series, or for one compressed one: its 24 decodes, each a C call that
    # holds the GIL for a JPEG 2000 frame's 25 ms, would starve the window's thread that paints the first slice.
    compressed = any(info.frames and needs_decoder(info.frames[0]) for info in from_files)
    if (len(from_files) > 1 or compressed) and worker_count() > 1:
        from_workers = map_in_order(measure_series_files, from_files, should_stop, what="phase detection")
    decided: list[tuple[SeriesInfo, PhaseDecision]] = []
    for info in infos:
        if should_stop is not None and should_stop():
            raise Cancelled()
        array = volumes.get(info.key)
        if info.key in measured:
            enhancement = measured[info.key]
        elif array is not None:
            enhancement = measure_series(info, _array_reader(array))
        elif from_workers is not None:
            enhancement = next(from_workers)
        else:
            enhancement = measure_series_files(info)
        decided.append((info, decide_contrast_phase(info, enhancement)))
    return {info.key: d for (info, _), d in zip(decided, decide_study_phases(decided))}


def measure_series_files(info: SeriesInfo) -> Enhancement | None:
    """`measure_series` on slices read from the files (a task of the worker processes)."""
    try:
        return measure_series(info, lambda z: read_slice(info, z))
    except FrameDecodeError as exc:
        return Enhancement(None, None, (), f"a sampled slice cannot be decoded: {exc}")


def reader_decision(phase: ContrastPhase, reader: str, previous: PhaseDecision | None) -> PhaseDecision:
    """A reader's correction, keeping what the images and the text said."""
    base = previous or PhaseDecision(ContrastPhase.UNKNOWN, DecidedBy.NOTHING, "")
    said = f"set by {reader}" + (f" (liverview said {base.phase.words}: {base.summary})" if base.summary else "")
    return replace(base, phase=phase, decided_by=DecidedBy.READER, summary=said, reader=reader)


__all__ = ["ContrastPhase", "DecidedBy", "Enhancement", "EnhancementSampler", "ImagePattern", "PhaseDecision",
           "decide_contrast_phase", "decide_study_phases", "delay_after_bolus_s", "detect_series_phases", "find_aorta",
           "find_liver", "measure_enhancement", "measure_series", "pattern_from_enhancement", "phase_from_text",
           "how_decided", "reader_decision", "sample_indices", "share_on_liver"]
