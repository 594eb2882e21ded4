"""The lesion simulator: many synthetic patients with labelled liver lesions, as a training dataset.

A *patient* is either

* a procedural phantom (:func:`simulate_patient`): a slab of the portal-venous abdomen around the
  liver (:func:`~liverview.synth.phantom.make_abdomen_phantom` with a reduced field of view), with
  its own anatomy, liver and blood-pool enhancement, pixel size, slice thickness, noise level and
  texture, and partial-volume blur; or
* a real CT series with a liver mask (:func:`simulate_on_volume`): lesions are painted into the
  liver of the real image, which keeps its own noise, anatomy and sharpness.

Each gets 2-6 lesions of random classes (``LesionSpec`` from
:func:`~liverview.synth.lesions.sample_varied_lesion_spec`), placed in the liver parenchyma, 5-80 mm,
rendered with the slice-sensitivity profile of the series (every slice is the mean of thin
sub-slices, so small lesions on thick slices lose contrast as on a real scanner). Everything follows
from one integer seed: the same seed gives identical arrays.

:func:`write_simulated_dataset` turns patients into the training-dataset format by handing an
in-memory :class:`~liverview.io.volume.Volume` and :class:`~liverview.annotations.document.AnnotationDocument`
to :func:`~liverview.annotations.export_dataset.export_dataset` — the app's own export — so app
exports and simulated data are the same format by construction; each line then gets a ``synth``
object with every parameter needed to regenerate the lesion. Parameter ranges and the sources they
follow: docs/synth.md.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydicom.uid import generate_uid

from liverview import __version__
from liverview.annotations.deid import KEY_FILE_NAME, Pseudonymizer, load_or_create_key
from liverview.annotations.document import AnnotationDocument, Lesion, Roi
from liverview.annotations.export_common import export_identity, volume_patient_identity
from liverview.annotations.dataset_format import (MARGIN_XY_PX, DatasetFolderLock, append_lesion_lines, read_lesion_lines,
                                                  read_manifest)
from liverview.annotations.export_dataset import PhaseSource, export_dataset, lesion_uid
from liverview.annotations.labels import LIVER, LesionClass
from liverview.annotations.measurements import lesion_mask
from liverview.atomic_write import write_json_atomic
from liverview.imaging.measure import polygon_mask
from liverview.imaging.outline import mask_to_polygons
from liverview.io.headers import SeriesIdentity
from liverview.io.volume import Volume
from liverview.paths import user_data_dir
from liverview.synth.acquisition import simulate_acquisition, to_int16_hu
from liverview.synth.dicom_writer import PatientInfo, SeriesPlacement, make_series_placement, write_ct_series
from liverview.synth.lesions import (
    Enhancement,
    LesionSpec,
    insert_lesion,
    lesion_footprint,
    sample_varied_lesion_spec,
)
from liverview.synth.phantom import make_abdomen_phantom
from liverview.synth.phases import TABLES, Phase, lesion_in_phase
from liverview.synth.texture import LiverTexture
from liverview.progress import Progress, ShouldStop, check_stop

logger = logging.getLogger(__name__)

#: Changing what the simulator draws must change this: it enters every seed and UID.
GENERATOR_VERSION = "2"
GENERATOR = "liverview-synth"
#: Reader name of every simulated lesion (the dataset's ``reader``).
READER = "simulator"
#: Fixed study date of simulated series (the files and lines do not depend on the clock).
STUDY_DATETIME = datetime(2026, 1, 1, 9, 0, 0)
_SALT = 0x51A7  # keeps the simulator's seed streams apart from the demo's


#: Key for the pseudonyms of phantom patients: public on purpose (they are nobody), so a dataset's
#: patient fields are reproducible from the seed.
PHANTOM_PSEUDONYM_KEY = b"liverview-synth phantom patients"


class SimulatorPseudonymizer(Pseudonymizer):
    """The app's pseudonymisation, except that the reader "simulator" (not a person) stays as is."""

    def reader_pseudonym(self, reader: str) -> str:
        return reader if reader == READER else super().reader_pseudonym(reader)


@dataclass(frozen=True)
class SimulatorConfig:
    """Ranges the simulator draws from (each ``(low, high)`` is uniform unless said otherwise).

    Sizes are log-uniform between ``diameter_mm`` bounds, the same for every class, so size alone
    does not give the class away. ``matrix_yx_px`` is the (rows, columns) of a phantom patient's
    slices (a field of view of that many ``pixel_mm`` pixels around the liver); ``subslice_mm`` is
    how finely the slice profile is sampled when lesions are painted.
    """

    diameter_mm: tuple[float, float] = (5.0, 80.0)
    lesions_per_patient: tuple[int, int] = (2, 6)
    classes: tuple[LesionClass, ...] = tuple(LesionClass)
    matrix_yx_px: tuple[int, int] = (208, 240)
    pixel_mm: tuple[float, float] = (0.66, 0.9)
    slice_mm: tuple[float, ...] = (2.5, 3.0, 5.0)
    liver_hu: tuple[float, float] = (92.0, 135.0)
    blood_pool_hu: tuple[float, float] = (150.0, 205.0)
    noise_sigma_hu: tuple[float, float] = (7.0, 20.0)
    noise_grain_mm: tuple[float, float] = (0.25, 0.55)
    blur_sigma_mm: tuple[float, float] = (0.35, 1.0)
    #: Parenchymal texture of the liver (`liverview.synth.texture`): its SD and correlation length.
    liver_texture_hu: tuple[float, float] = (4.0, 10.0)
    liver_texture_mm: tuple[float, float] = (2.0, 5.0)
    subslice_mm: float = 1.7
    #: Contrast phases each patient is rendered in (the lesions are drawn in the portal-venous one).
    phases: tuple[str, ...] = ("portal_venous",)
    #: Breathing between phases: the largest shift (mm) of the anatomy along z, y, x.
    motion_mm: tuple[float, float, float] = (4.0, 2.0, 1.0)

    def __post_init__(self) -> None:
        lo, hi = self.diameter_mm
        if not 0.0 < lo <= hi:
            raise ValueError(f"diameter range {self.diameter_mm} must be positive and ordered")
        if not 0.0 <= self.noise_sigma_hu[0] <= self.noise_sigma_hu[1]:
            raise ValueError(f"noise SD range {self.noise_sigma_hu} HU must be non-negative and ordered")
        if not 1 <= self.lesions_per_patient[0] <= self.lesions_per_patient[1]:
            raise ValueError(f"lesions per patient {self.lesions_per_patient} must be >= 1 and ordered")
        if not self.classes:
            raise ValueError("at least one lesion class is needed")
        if "portal_venous" not in self.phases or any(p not in {ph.value for ph in Phase} for p in self.phases):
            raise ValueError(f"phases {self.phases} must name contrast phases and include portal_venous (the one "
                             "the lesions are drawn in)")

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["classes"] = [c.value for c in self.classes]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SimulatorConfig:
        fields = {k: v for k, v in values.items() if k in {f.name for f in dataclasses.fields(cls)}}
        if "classes" in fields:
            fields["classes"] = tuple(LesionClass(c) for c in fields["classes"])
        for key, value in list(fields.items()):
            if isinstance(value, list):
                fields[key] = tuple(value)
        return cls(**fields)


DEFAULT_CONFIG = SimulatorConfig()


def _pack_mask(mask: np.ndarray) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...], np.ndarray]:
    """(shape, bounding box, bit-packed contents) of a boolean volume."""
    if not mask.any():
        return mask.shape, ((0, 0),) * mask.ndim, np.zeros(0, np.uint8)
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    crop = mask[tuple(slice(a, b) for a, b in box)]
    return mask.shape, tuple(box), np.packbits(crop, axis=None)


def _unpack_mask(packed: tuple[tuple[int, ...], tuple[tuple[int, int], ...], np.ndarray]) -> np.ndarray:
    shape, box, bits = packed
    mask = np.zeros(shape, dtype=bool)
    size = tuple(b - a for a, b in box)
    if bits.size:
        crop = np.unpackbits(bits, count=int(np.prod(size))).reshape(size)
        mask[tuple(slice(a, b) for a, b in box)] = crop.astype(bool)
    return mask


@dataclass
class SimulatedLesion:
    """One generated lesion and its ground truth.

    ``mask`` is bool ``(z, y, x)`` over the whole patient volume: the union of ``outlines`` (slice
    index -> polygons, x = column, y = row), which go into the annotation, so the exported mask
    equals it exactly.
    """

    lesion_id: str
    spec: LesionSpec
    mask: np.ndarray
    requested_diameter_mm: float
    subslices: int
    outlines: dict[int, list[list[tuple[float, float]]]] = field(default_factory=dict, repr=False)

    @property
    def lesion_class(self) -> LesionClass:
        return self.spec.lesion_class

    def __getstate__(self) -> dict[str, Any]:
        # Between processes the mask travels as its bounding box (a few kB instead of the volume).
        state = dict(self.__dict__)
        state["mask"] = _pack_mask(self.mask)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["mask"] = _unpack_mask(state["mask"])
        self.__dict__.update(state)

    def synth_record(self, patient: SimulatedPatient) -> dict[str, Any]:
        """The ``synth`` object of the dataset line: the spec's fields (``class`` first, as in the
        demo's ground truth), how it was drawn and rendered, and the patient it belongs to."""
        return {
            **self.spec.to_dict(),
            "generator": GENERATOR,
            "generator_version": GENERATOR_VERSION,
            "lesion_id": self.lesion_id,
            "requested_diameter_mm": round(self.requested_diameter_mm, 3),
            "subslices": self.subslices,
            "patient": patient.parameters(),
        }


@dataclass
class PhaseImage:
    """The patient in another contrast phase: its own slices, noise and breathing position."""

    phase: str
    hu: np.ndarray
    spacing_mm_zyx: tuple[float, float, float]
    #: Where this series' slice 0 lies relative to the key series' slice 0 along z (mm), and the
    #: breathing shift of the anatomy (LPS mm) a reader's alignment has to find.
    z_offset_mm: float
    shift_mm: tuple[float, float, float]
    acquisition: dict[str, Any]


@dataclass
class SimulatedPatient:
    """A generated (or real, lesion-added) CT volume with its lesions and everything drawn for it.

    ``hu`` is int16 ``(z, y, x)`` HU; ``liver_mask`` the liver the lesions were placed in.
    ``acquisition`` holds the per-patient draws (spacing, enhancement, noise, blur, field of view).
    ``patient_id`` and ``study_uid`` are what the series says (``SIM-…`` and a generated UID for a
    phantom, the source's for a real series); exports pseudonymise them.
    """

    patient_id: str
    seed: int
    source: str  # "phantom" or "ct"
    hu: np.ndarray
    spacing_mm_zyx: tuple[float, float, float]
    liver_mask: np.ndarray
    lesions: list[SimulatedLesion]
    lesion_classes: tuple[LesionClass, ...]
    acquisition: dict[str, Any]
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    template: Volume | None = field(default=None, repr=False)
    #: The other contrast phases rendered (`SimulatorConfig.phases`), by phase; `hu` is portal-venous.
    phases: dict[str, PhaseImage] = field(default_factory=dict)

    def __getstate__(self) -> dict[str, Any]:
        # The source series of a real-CT patient stays behind (the receiver has it already).
        state = dict(self.__dict__)
        state["liver_mask"] = _pack_mask(self.liver_mask)
        state["template"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["liver_mask"] = _unpack_mask(state["liver_mask"])
        self.__dict__.update(state)

    def parameters(self) -> dict[str, Any]:
        """What regenerates this patient: seed, requested classes, source and acquisition draws
        (for a phantom also its identifier; a real patient's is never written)."""
        values: dict[str, Any] = {"seed": self.seed, "source": self.source,
                                  "classes": [c.value for c in self.lesion_classes]}
        if self.source == "phantom":
            values["id"] = self.patient_id
        if self.phases:
            values["phases"] = {name: image.acquisition for name, image in self.phases.items()}
        return {**values, **self.acquisition}


@dataclass(frozen=True)
class PatientPlan:
    """One patient of a dataset run: its index, seed and the classes of its lesions."""

    index: int
    seed: int
    classes: tuple[LesionClass, ...]


@dataclass
class DatasetSummary:
    """What :func:`write_simulated_dataset` wrote."""

    out_dir: Path
    n_patients: int
    n_lesions: int
    per_class: dict[str, int]
    seconds: float

    @property
    def lesions_per_second(self) -> float:
        return self.n_lesions / self.seconds if self.seconds > 0 else float("inf")


# ---------------------------------------------------------------------------------------------
# Rendering


def insert_lesion_with_slice_profile(
    hu: np.ndarray,
    liver_mask: np.ndarray,
    spec: LesionSpec,
    spacing_mm_zyx: tuple[float, float, float],
    subslices: int,
) -> np.ndarray:
    """:func:`~liverview.synth.lesions.insert_lesion` with a slice-sensitivity profile.

    Each slice of thickness ``dz`` is rendered as ``subslices`` thin sub-slices and averaged, so a
    lesion that fills only part of a slice's thickness shows with part of its contrast (partial
    volume along z), as on a real scanner. Paints into the float32 ``hu`` in place and returns the
    ground-truth mask (bool, full volume): the voxels at least half covered by the lesion; a lesion
    too thin for that anywhere keeps the voxels at least half as covered as its most covered one.
    Fragments under 4 pixels in a slice are left out of the mask, as in ``insert_lesion``.
    """
    if subslices <= 1:
        return insert_lesion(hu, liver_mask, spec, spacing_mm_zyx)
    dz, dy, dx = (float(v) for v in spacing_mm_zyx)
    box, _ = lesion_footprint(spec, hu.shape, spacing_mm_zyx, spec.margin_mm + dz)
    full = np.zeros(hu.shape, dtype=bool)
    n = box[0].stop - box[0].start
    if n <= 0 or box[1].stop <= box[1].start or box[2].stop <= box[2].start:
        return full
    fine_dz = dz / subslices
    origin = (box[0].start * dz - dz / 2.0 + fine_dz / 2.0, box[1].start * dy, box[2].start * dx)
    local = dataclasses.replace(
        spec, centre_mm_zyx=tuple(float(c - o) for c, o in zip(spec.centre_mm_zyx, origin, strict=True))
    )
    fine = np.repeat(hu[box], subslices, axis=0)
    fine_liver = np.repeat(liver_mask[box], subslices, axis=0)
    fine_mask = insert_lesion(fine, fine_liver, local, (fine_dz, dy, dx))
    shape = (n, subslices, *fine.shape[1:])
    hu[box] = fine.reshape(shape).mean(axis=1, dtype=np.float32)
    coverage = fine_mask.reshape(shape).mean(axis=1)
    mask = coverage >= 0.5
    if not mask.any() and coverage.max() > 0.0:
        mask = coverage >= 0.5 * coverage.max()
    for k in range(n):
        if mask[k].any():
            count, labels, stats, _ = cv2.connectedComponentsWithStats(mask[k].astype(np.uint8), connectivity=8)
            for label in range(1, count):
                if stats[label, cv2.CC_STAT_AREA] < 4:
                    mask[k][labels == label] = False
    full[box] = mask
    return full


def outline_mask(mask: np.ndarray) -> tuple[np.ndarray, dict[int, list[list[tuple[float, float]]]]]:
    """The mask that the lesion's outlines describe, and the outlines per slice.

    Outlines are traced with :func:`~liverview.imaging.outline.mask_to_polygons` (outer
    contours, holes filled), which `polygon_mask` — what the export rasterises — gives back exactly;
    so the result is the mask itself unless a slice has holes, which it fills.
    """
    result = np.zeros(mask.shape, dtype=bool)
    outlines: dict[int, list[list[tuple[float, float]]]] = {}
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        traced = mask_to_polygons(mask[z])
        outlines[int(z)] = traced
        if _has_holes(mask[z]):
            for outline in traced:
                result[z] |= polygon_mask(outline, mask.shape[1:])
        else:
            result[z] = mask[z]
    return result, outlines


def _has_holes(plane: np.ndarray) -> bool:
    """Whether background pixels are enclosed by the mask (8-connected mask, 4-connected holes)."""
    padded = np.pad(plane.astype(np.uint8), 1)
    background = (padded == 0).astype(np.uint8)
    cv2.floodFill(background, None, (0, 0), 2, flags=4)
    return bool((background == 1).any())


def _subslices(dz: float, diameter_mm: float, config: SimulatorConfig) -> int:
    """Sub-slices per slice for a lesion: enough to sample the slice profile every
    ``config.subslice_mm``, but only for lesions less than 8 slices across (for larger ones partial
    volume along z touches only their first and last slice, never the slices a reader looks at)."""
    if diameter_mm >= 8.0 * dz:
        return 1
    return max(1, int(math.ceil(dz / config.subslice_mm - 1e-6)))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size: int | None = None) -> Any:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size=size))


class NoRoomError(ValueError):
    """A lesion does not fit into what is left of the liver, even at the smallest size."""


#: Every lesion grown by its blended margin and this much must lie in free liver, and what it
#: takes is the same grown footprint: so lesions stay >= 2 mm (+ margin) inside the liver and
#: >= 4 mm (+ both margins) apart.
GAP_MM = 2.0


class _Room:
    """Where lesions can still go: the free liver and, per slice, the in-plane distance (mm) to the
    nearest pixel that is not free. ``candidates`` lists centres where a sphere fits (on every slice
    whose thickness it reaches, the free distance at its centre exceeds the sphere's cross-section
    there) - a quick necessary condition before the exact footprint test of :func:`_find_spot`."""

    def __init__(self, free: np.ndarray, spacing: tuple[float, float, float]) -> None:
        self.free = free.copy()
        self.spacing = spacing
        self.pixel_mm = math.sqrt(spacing[1] * spacing[2])
        self.step = max(1, int(round(2.0 / self.pixel_mm)))  # candidate centres every ~2 mm in-plane
        self.distance = np.zeros(free.shape, dtype=np.float32)
        self._update(range(free.shape[0]))

    def _update(self, slices: Sequence[int] | range) -> None:
        for k in slices:
            if self.free[k].any():
                self.distance[k] = cv2.distanceTransform(self.free[k].astype(np.uint8), cv2.DIST_L2, 5) * self.pixel_mm
            else:
                self.distance[k] = 0.0

    def candidates(self, radius_mm: float) -> np.ndarray:
        """(k, y, x) voxel indices (on the coarse grid) where a sphere of ``radius_mm`` fits."""
        dz = self.spacing[0]
        grid = self.distance[:, :: self.step, :: self.step]
        valid = grid >= radius_mm
        reach = int(math.ceil(radius_mm / dz + 0.5))
        n = grid.shape[0]
        for offset in range(1, reach + 1):
            # The sphere's largest cross-section within the slab of the slice `offset` away.
            near = max(0.0, offset * dz - dz / 2.0)
            need = math.sqrt(max(radius_mm**2 - near**2, 0.0)) if near < radius_mm else None
            if need is None:
                break
            valid[: n - offset] &= grid[offset:] >= max(need, 1e-3)
            valid[n - offset :] = False
            valid[offset:] &= grid[: n - offset] >= max(need, 1e-3)
            valid[:offset] = False
        found = np.argwhere(valid)
        found[:, 1:] *= self.step
        return found

    def occupy(self, corner: Sequence[int], footprint: np.ndarray) -> None:
        """Take ``footprint`` (bool, placed with its first voxel at ``corner``) out of the free liver."""
        lo = [max(0, int(c)) for c in corner]
        hi = [min(n, int(c) + f) for c, f, n in zip(corner, footprint.shape, self.free.shape, strict=True)]
        if any(h <= low for low, h in zip(lo, hi, strict=True)):
            return
        part = footprint[tuple(slice(a - int(c), b - int(c)) for a, b, c in zip(lo, hi, corner, strict=True))]
        self.free[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] &= ~part
        self._update(range(lo[0], hi[0]))


class _Footprint:
    """A lesion's footprint on the voxel grid, relative to its centre voxel.

    Every candidate centre is a voxel plus the same sub-voxel jitter, so the footprint (which voxels
    the lesion, grown by some margin, reaches) is the same boolean block for all of them and is
    computed once; ``fits`` then only indexes the free mask.
    """

    def __init__(self, spec: LesionSpec, spacing: tuple[float, float, float], grow_mm: float) -> None:
        # ``spec`` is the lesion at the origin: its centre is only the sub-voxel jitter.
        if any(abs(c) > s for c, s in zip(spec.centre_mm_zyx, spacing, strict=True)):
            raise ValueError("a footprint template needs the lesion centred at the origin (jitter only)")
        extent = max(spec.radii_mm_zyx) * (1.0 + 2.0 * spec.lobulation) + grow_mm + 2.0 * max(spacing)
        self.half = tuple(int(math.ceil(extent / s)) + 1 for s in spacing)
        shape = tuple(2 * h + 1 for h in self.half)
        placed = _at(spec, self.half, spacing)
        box, reach = lesion_footprint(placed, shape, spacing, grow_mm)
        self.offset = tuple(b.start - h for b, h in zip(box, self.half, strict=True))
        self.reach = reach

    def corner(self, voxel: Sequence[int]) -> tuple[int, int, int]:
        return tuple(int(v) + o for v, o in zip(voxel, self.offset, strict=True))  # type: ignore[return-value]

    def fits(self, free: np.ndarray, voxel: Sequence[int]) -> bool:
        corner = self.corner(voxel)
        if any(c < 0 or c + n > size for c, n, size in zip(corner, self.reach.shape, free.shape, strict=True)):
            return False
        region = free[tuple(slice(c, c + n) for c, n in zip(corner, self.reach.shape, strict=True))]
        return bool(region[self.reach].all())


def _at(spec: LesionSpec, voxel: Sequence[int], spacing: tuple[float, float, float]) -> LesionSpec:
    """The spec moved to ``voxel``, keeping its sub-voxel jitter (sampled as its centre at the origin)."""
    centre = tuple(float(v * s + j) for v, s, j in zip(voxel, spacing, spec.centre_mm_zyx, strict=True))
    return dataclasses.replace(spec, centre_mm_zyx=centre)


def _find_spot(
    spec: LesionSpec, room: _Room, spacing: tuple[float, float, float], rng: np.random.Generator, tries: int = 300
) -> tuple[np.ndarray, _Footprint] | None:
    """A centre voxel where the lesion, grown by its margin and :data:`GAP_MM`, lies in free liver,
    and the footprint that then leaves the liver's free part: candidates where a sphere of its
    smallest semi-axis fits (a necessary condition, from the distance maps) are tried in random
    order against the exact footprint; the first that fits is a uniform draw among the candidates
    that fit. None if none of ``tries`` fits."""
    small = min(spec.radii_mm_zyx) * (1.0 - 1.5 * spec.lobulation) + spec.margin_mm + GAP_MM
    found = room.candidates(max(small - 0.5 * max(spacing), 0.5))
    if not len(found):
        return None
    footprint = _Footprint(spec, spacing, spec.margin_mm + GAP_MM)
    for index in rng.permutation(len(found))[:tries]:
        if footprint.fits(room.free, found[index]):
            return found[index], footprint
    return None


def _placement_mask(liver: np.ndarray, border_px: int) -> np.ndarray:
    """Liver where a lesion may go: not on the first or last slice, and not within ``border_px``
    of the image edge (so the exported patch keeps its full margin)."""
    available = liver.copy()
    available[:1] = False
    available[-1:] = False
    available[:, :border_px] = False
    available[:, -border_px:] = False
    available[:, :, :border_px] = False
    available[:, :, -border_px:] = False
    return available


def _place_and_render(
    hu: np.ndarray,
    liver: np.ndarray,
    spacing: tuple[float, float, float],
    requests: Sequence[tuple[LesionClass, float]],
    enhancement: Enhancement,
    rng: np.random.Generator,
    config: SimulatorConfig,
    should_stop: ShouldStop | None,
) -> list[SimulatedLesion]:
    """Place the requests largest first and paint each into ``hu``.

    A lesion's spot is drawn uniformly among the centres (on a ~2 mm grid) where the lesion and
    its margin lie :data:`GAP_MM` inside the free liver (:func:`_find_spot`); the same grown
    footprint is then taken out of the free liver, so lesions keep twice that apart. One that does
    not fit is shrunk by 10 % at a time down to the smallest configured size, then
    :class:`NoRoomError` is raised. Centres are jittered off the voxel grid by up to half a voxel.
    """
    room = _Room(_placement_mask(liver, MARGIN_XY_PX + 2), spacing)
    order = sorted(range(len(requests)), key=lambda i: -requests[i][1])
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=len(requests))]
    placed: dict[int, SimulatedLesion] = {}
    for i in order:
        check_stop(should_stop)
        lesion_class, diameter = requests[i]
        size = diameter
        while True:
            # Parameters at the origin first: their extent decides where the lesion fits.
            spec = sample_varied_lesion_spec(lesion_class, (0.0, 0.0, 0.0), size, seeds[i], enhancement, spacing)
            spot = _find_spot(spec, room, spacing, rng)
            if spot is not None:
                break
            if size <= config.diameter_mm[0] * 1.0001:
                raise NoRoomError(f"no room left in the liver for a {size:.0f} mm {lesion_class.value}")
            size = max(size * 0.9, config.diameter_mm[0])
        voxel, keep_out = spot
        room.occupy(keep_out.corner(voxel), keep_out.reach)
        spec = _at(spec, voxel, spacing)
        subslices = _subslices(spacing[0], spec.diameter_mm, config)
        rendered = insert_lesion_with_slice_profile(hu, liver, spec, spacing, subslices)
        mask, outlines = outline_mask(rendered)
        if not mask.any():
            # Too faint to outline anywhere (cannot happen at >= 5 mm; guards the class balance).
            raise NoRoomError(f"a {spec.diameter_mm:.1f} mm {lesion_class.value} has no slice to outline")
        placed[i] = SimulatedLesion(f"S{i + 1}", spec, mask, float(diameter), subslices, outlines)
    return [placed[i] for i in range(len(requests))]


# ---------------------------------------------------------------------------------------------
# Patients


def _seed_streams(seed: int, n: int, *extra: int) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence([_SALT, int(GENERATOR_VERSION), *extra, int(seed)]).spawn(n)


def phantom_patient_id(seed: int) -> str:
    """The Patient ID of a phantom patient: ``SIM-`` + 10 hex digits of its seed's hash (exports pseudonymise it)."""
    return "SIM-" + hashlib.sha256(f"{GENERATOR}/{GENERATOR_VERSION}/{seed}".encode()).hexdigest()[:10]


def draw_diameters(rng: np.random.Generator, n: int, config: SimulatorConfig = DEFAULT_CONFIG) -> list[float]:
    """``n`` lesion diameters (mm), log-uniform over ``config.diameter_mm``, whatever the class."""
    return [float(d) for d in _log_uniform(rng, *config.diameter_mm, size=n)]


def draw_classes(rng: np.random.Generator, config: SimulatorConfig) -> tuple[LesionClass, ...]:
    n = int(rng.integers(config.lesions_per_patient[0], config.lesions_per_patient[1] + 1))
    return tuple(config.classes[int(i)] for i in rng.integers(0, len(config.classes), size=n))


def simulate_patient(
    seed: int,
    lesion_classes: Sequence[LesionClass] | None = None,
    config: SimulatorConfig = DEFAULT_CONFIG,
    *,
    should_stop: ShouldStop | None = None,
    centre_xy_mm: tuple[float, float] | None = None,
) -> SimulatedPatient:
    """One phantom patient with lesions of ``lesion_classes`` (drawn from the seed when None).

    ``centre_xy_mm`` replaces the drawn centre of the field of view (anatomical X, Y in mm; every other
    draw stays the same): (0, 0) with a ``config.matrix_yx_px`` wide enough shows the whole abdomen, spine
    and aorta included, as the four-phase demo does.

    Per patient the seed draws: the anatomy (liver shape, vessels, bowel), liver and blood-pool
    enhancement, pixel size and slice thickness, the field of view (a slab of the liver tall enough
    for the largest lesion), lesion sizes, spots and appearance, noise level and grain, and blur.
    """
    draw_seq, anatomy_seq, place_seq, noise_seq = _seed_streams(seed, 4)
    rng = np.random.default_rng(draw_seq)
    classes = tuple(lesion_classes) if lesion_classes is not None else draw_classes(rng, config)
    if not classes:
        raise ValueError("a simulated patient needs at least one lesion")
    diameters = draw_diameters(rng, len(classes), config)
    pixel = float(rng.uniform(*config.pixel_mm))
    dz = float(config.slice_mm[int(rng.integers(len(config.slice_mm)))])
    liver_hu = float(rng.uniform(*config.liver_hu))
    blood_hu = float(rng.uniform(*config.blood_pool_hu))
    noise_sigma = float(rng.uniform(*config.noise_sigma_hu))
    grain = float(rng.uniform(*config.noise_grain_mm))
    blur = float(rng.uniform(*config.blur_sigma_mm))
    texture = LiverTexture.draw(rng, rng.uniform(*config.liver_texture_hu), rng.uniform(*config.liver_texture_mm))
    # A slab of the liver tall enough for the largest lesion, where the liver is widest
    # (between ~10 mm and ~135 mm below the dome of the phantom).
    slab_mm = max(45.0, 1.1 * max(diameters) + 2.0 * dz + 14.0)
    lo = 10.0 + slab_mm / 2.0
    hi = max(lo, 135.0 - slab_mm / 2.0)
    top_s = float(rng.uniform(lo, hi)) - slab_mm / 2.0
    centre_xy = (float(rng.uniform(-72.0, -45.0)), float(rng.uniform(-22.0, 0.0)))
    if centre_xy_mm is not None:
        centre_xy = (float(centre_xy_mm[0]), float(centre_xy_mm[1]))
    nz = int(math.ceil(slab_mm / dz))
    shape = (nz, *config.matrix_yx_px)
    spacing = (dz, pixel, pixel)

    phantom = make_abdomen_phantom(
        shape,
        spacing,
        np.random.default_rng(anatomy_seq),
        should_stop=should_stop,
        centre_xy_mm=centre_xy,
        top_s_mm=top_s,
        liver_hu=liver_hu,
        blood_pool_hu=blood_hu,
    )
    liver = phantom.masks["liver"]
    texture.add_to(phantom.hu, phantom.parenchyma, spacing)
    lesions = _place_and_render(
        phantom.hu,
        liver,
        spacing,
        list(zip(classes, diameters, strict=True)),
        Enhancement(liver_hu, blood_hu),
        np.random.default_rng(place_seq),
        config,
        should_stop,
    )
    simulate_acquisition(
        phantom.hu, spacing, np.random.default_rng(noise_seq), noise_sigma_hu=noise_sigma, blur_sigma_mm=blur,
        noise_grain_mm=grain,
    )
    others = {}
    for index, phase in enumerate(p for p in config.phases if p != Phase.PORTAL_VENOUS.value):
        check_stop(should_stop)
        others[phase] = _render_phase(phase, index, seed, anatomy_seq, (shape, spacing, centre_xy, top_s),
                                      (liver_hu, blood_hu), lesions, config, texture)
    # Another field of view is another series: outlines saved on one must not land on the other's pixels.
    view = [] if centre_xy_mm is None else [f"field of view {centre_xy} {config.matrix_yx_px}"]
    identity = make_series_placement([GENERATOR, GENERATOR_VERSION, "phantom", str(seed), *view], STUDY_DATETIME)
    acquisition = {
        "spacing_mm_zyx": [dz, pixel, pixel],
        "shape_zyx": list(shape),
        "field_of_view_centre_xy_mm": [round(c, 3) for c in centre_xy],
        "top_slice_depth_mm": round(top_s, 3),
        "liver_hu": round(liver_hu, 2),
        "blood_pool_hu": round(blood_hu, 2),
        "noise_sigma_hu": round(noise_sigma, 2),
        "noise_grain_mm": round(grain, 3),
        "blur_sigma_mm": round(blur, 3),
        "liver_texture_hu": round(texture.sd_hu, 2),
        "liver_texture_mm": round(texture.length_mm, 2),
    }
    return SimulatedPatient(
        patient_id=phantom_patient_id(seed),
        seed=int(seed),
        source="phantom",
        hu=to_int16_hu(phantom.hu),
        spacing_mm_zyx=spacing,
        liver_mask=liver,
        lesions=lesions,
        lesion_classes=classes,
        acquisition=acquisition,
        study_uid=identity.study_instance_uid,
        series_uid=identity.series_instance_uid,
        frame_of_reference_uid=identity.frame_of_reference_uid,
        phases=others,
    )


def _render_phase(phase: str, index: int, seed: int, anatomy_seq: np.random.SeedSequence, grid: tuple,
                  enhancement: tuple[float, float], lesions: list[SimulatedLesion], config: SimulatorConfig,
                  texture: LiverTexture) -> PhaseImage:
    """The same patient and lesions in `phase`, as another series of the study: the same anatomy
    (`anatomy_seq`), liver texture and lesion specs in that phase (`phases.lesion_in_phase`), its own
    slice thickness, noise, grain and blur, and a breathing shift of the anatomy."""
    (shape, spacing, centre_xy, top_s), (liver_hu, blood_hu) = grid, enhancement
    rng = np.random.default_rng(_seed_streams(seed, 1, 100 + index)[0])
    dz = float(config.slice_mm[int(rng.integers(len(config.slice_mm)))])
    extent = shape[0] * spacing[0]
    nz = int(math.ceil(extent / dz))
    # Both series end at the same top slice (same depth below the dome); slice 0 of this one lies
    # z_offset mm above slice 0 of the key series.
    z_offset = (shape[0] - 1) * spacing[0] - (nz - 1) * dz
    phase_spacing = (dz, spacing[1], spacing[2])
    phantom = make_abdomen_phantom((nz, *shape[1:]), phase_spacing, np.random.default_rng(anatomy_seq),
                                   centre_xy_mm=centre_xy, top_s_mm=top_s, liver_hu=liver_hu, blood_pool_hu=blood_hu,
                                   phase=phase)
    texture.add_to(phantom.hu, phantom.parenchyma, phase_spacing, z_offset)
    blood_scale = blood_hu / TABLES[Phase.PORTAL_VENOUS].portal_vein
    for lesion in lesions:
        z, y, x = lesion.spec.centre_mm_zyx
        spec = dataclasses.replace(lesion_in_phase(lesion.spec, phase, liver_hu, blood_scale),
                                   centre_mm_zyx=(z - z_offset, y, x))
        insert_lesion_with_slice_profile(phantom.hu, phantom.masks["liver"], spec, phase_spacing,
                                         _subslices(dz, spec.diameter_mm, config))
    noise = float(rng.uniform(*config.noise_sigma_hu))
    grain = float(rng.uniform(*config.noise_grain_mm))
    blur = float(rng.uniform(*config.blur_sigma_mm))
    simulate_acquisition(phantom.hu, phase_spacing, rng, noise_sigma_hu=noise, blur_sigma_mm=blur, noise_grain_mm=grain)
    shift = tuple(float(rng.uniform(-m, m)) for m in config.motion_mm)
    return PhaseImage(phase, to_int16_hu(phantom.hu), phase_spacing, z_offset, shift,  # type: ignore[arg-type]
                      {"spacing_mm_zyx": list(phase_spacing), "noise_sigma_hu": round(noise, 2),
                       "noise_grain_mm": round(grain, 3), "blur_sigma_mm": round(blur, 3),
                       "breathing_shift_mm_zyx": [round(v, 2) for v in shift]})


def estimate_enhancement(hu: np.ndarray, liver_mask: np.ndarray) -> tuple[Enhancement, float]:
    """(liver and blood-pool attenuation, noise SD) of a real series from its liver mask.

    Liver: median inside the mask shrunk by 3 pixels. Blood pool: the 99.5th percentile of the
    5x5-median-filtered mask (the portal and hepatic veins inside it), at least liver + 30 HU.
    Noise: 1.4826 x median absolute deviation of the image minus its 5x5 median, in the liver.
    """
    slices = np.flatnonzero(liver_mask.any(axis=(1, 2)))
    kernel = np.ones((7, 7), np.uint8)
    inner_values, smooth_values, residual = [], [], []
    for z in slices:
        image = hu[z].astype(np.float32)
        smooth = cv2.medianBlur(image, 5)
        inner = cv2.erode(liver_mask[z].astype(np.uint8), kernel).astype(bool)
        if not inner.any():
            inner = liver_mask[z]
        inner_values.append(smooth[inner])
        smooth_values.append(smooth[liver_mask[z]])
        residual.append((image - smooth)[inner])
    if not slices.size:
        raise ValueError("the liver mask is empty")
    liver_hu = float(np.median(np.concatenate(inner_values)))
    blood = float(np.percentile(np.concatenate(smooth_values), 99.5))
    r = np.concatenate(residual)
    noise = float(1.4826 * np.median(np.abs(r - np.median(r))))
    return Enhancement(liver_hu, float(np.clip(blood, liver_hu + 30.0, 300.0))), noise


def simulate_on_volume(
    volume: Volume,
    liver_mask: np.ndarray,
    n_lesions: int,
    seed: int,
    *,
    lesion_classes: Sequence[LesionClass] | None = None,
    config: SimulatorConfig = DEFAULT_CONFIG,
    should_stop: ShouldStop | None = None,
) -> SimulatedPatient:
    """Insert ``n_lesions`` simulated lesions into the liver of a real CT series.

    ``liver_mask`` is bool ``(z, y, x)`` on the series grid (see :func:`load_liver_mask`); lesions
    stay inside it. Lesion attenuation refers to the series' own liver and blood pool (measured
    with :func:`estimate_enhancement`). The lesion is painted into a 5x5-median-filtered copy of
    each slice and only the difference, blurred in-plane by the drawn partial-volume blur, is added
    to the original: the real image keeps its noise and texture inside the lesion, and vessels
    the lesion grows over disappear. ``lesion_classes`` (else drawn from the seed) must have
    ``n_lesions`` entries. The result is a new series of the same patient and study: new
    Series/SOP UIDs derived from the source and the seed (:func:`write_simulated_dataset`
    pseudonymises patient and UIDs as the app's export does, so lesions of one real patient share
    one pseudonym). Lesion centres are in the array frame of the whole series.
    """
    if liver_mask.shape != volume.shape:
        raise ValueError(f"liver mask shape {liver_mask.shape} does not match the series {volume.shape}")
    if not volume.is_hu:
        raise ValueError("lesions can only be simulated on CT series in Hounsfield units")
    liver = liver_mask.astype(bool)
    if not liver.any():
        raise ValueError("the liver mask is empty")
    draw_seq, place_seq = _seed_streams(seed, 2, 0xC7)
    rng = np.random.default_rng(draw_seq)
    if lesion_classes is None:
        classes = tuple(config.classes[int(i)] for i in rng.integers(0, len(config.classes), size=n_lesions))
    else:
        classes = tuple(lesion_classes)
        if len(classes) != n_lesions:
            raise ValueError(f"{len(classes)} lesion classes given for {n_lesions} lesions")
    diameters = draw_diameters(rng, len(classes), config)
    blur = float(rng.uniform(*config.blur_sigma_mm))
    spacing = tuple(float(s) for s in volume.spacing_mm)

    enhancement, noise = estimate_enhancement(volume.array, liver)
    slices = np.flatnonzero(liver.any(axis=(1, 2)))
    z0, z1 = int(slices[0]), int(slices[-1]) + 1
    # Work on the liver's slices only (plus one either side), in float32.
    lo, hi = max(0, z0 - 1), min(volume.shape[0], z1 + 1)
    original = volume.array[lo:hi].astype(np.float32)
    background = np.stack([cv2.medianBlur(s, 5) for s in original])
    painted = background.copy()
    lesions = _place_and_render(
        painted, liver[lo:hi], spacing, list(zip(classes, diameters, strict=True)), enhancement,
        np.random.default_rng(place_seq), config, should_stop,
    )
    delta = painted - background
    blur_px = blur / math.sqrt(spacing[1] * spacing[2])
    for k in range(delta.shape[0]):
        if np.any(delta[k]):
            delta[k] = cv2.GaussianBlur(delta[k], (0, 0), blur_px, borderType=cv2.BORDER_REPLICATE)
    hu = volume.array.copy()
    hu[lo:hi] = to_int16_hu(original + delta)
    for lesion in lesions:
        full = np.zeros(volume.shape, dtype=bool)
        full[lo:hi] = lesion.mask
        lesion.mask = full
        lesion.outlines = {z + lo: polygons for z, polygons in lesion.outlines.items()}
        cz, cy, cx = lesion.spec.centre_mm_zyx
        lesion.spec = dataclasses.replace(lesion.spec, centre_mm_zyx=(cz + lo * spacing[0], cy, cx))

    series_uid = generate_uid(entropy_srcs=[GENERATOR, GENERATOR_VERSION, "ct", volume.series_uid, str(seed)])
    acquisition = {
        "source_series_shape_zyx": list(volume.shape),
        "spacing_mm_zyx": list(spacing),
        "liver_hu": round(enhancement.liver_hu, 2),
        "blood_pool_hu": round(enhancement.blood_pool_hu, 2),
        "measured_noise_sigma_hu": round(noise, 2),
        "blur_sigma_mm": round(blur, 3),
        "liver_slices": [z0, z1],
    }
    return SimulatedPatient(
        patient_id=volume_patient_identity(volume),
        seed=int(seed),
        source="ct",
        hu=hu,
        spacing_mm_zyx=spacing,  # type: ignore[arg-type]
        liver_mask=liver,
        lesions=lesions,
        lesion_classes=classes,
        acquisition=acquisition,
        study_uid=volume.study_uid,
        series_uid=series_uid,
        frame_of_reference_uid=volume.frame_of_reference_uid,
        template=volume,
    )


# ---------------------------------------------------------------------------------------------
# Liver masks of real series


def load_liver_mask(
    path: str | os.PathLike[str], volume: Volume, labels: Sequence[str] = ("liver",)
) -> np.ndarray:
    """A liver mask for ``volume`` from a file: bool ``(z, y, x)`` on the series grid.

    * a liverview annotation file (``.json``): the union of the lesions/ROI sets whose label or
      note matches one of ``labels`` (case-insensitive), e.g. a liver outlined in the app and
      labelled "liver";
    * a DICOM SEG: the union of the segments whose label or description contains one of ``labels``,
      or whose Segmented Property Type or Anatomic Region is SNOMED CT 10200004 "Liver";
    * a NumPy ``.npy`` / ``.npz`` (key ``liver``, ``mask`` or the only array) of the series' shape.

    Raises ValueError saying what was found when nothing matches.
    """
    from liverview.io.seg_import import import_seg, is_seg_file

    path = Path(path)
    wanted = [label.lower() for label in labels]
    if path.suffix.lower() in (".npy", ".npz"):
        array = _load_numpy_mask(path)
        if array.shape != volume.shape:
            raise ValueError(f"{path}: mask shape {array.shape} does not match the series {volume.shape}")
        mask = array.astype(bool)
    elif is_seg_file(path):
        seg = import_seg(path, volume)
        mask = np.zeros(volume.shape, dtype=bool)
        found = []
        for segment in seg.segments:
            text = f"{segment.label} {segment.description}".lower()
            codes = [segment.property_type, *segment.anatomic_regions]
            found.append(segment.label or segment.description or str(segment.number))
            if any(w in text for w in wanted) or any(c is not None and c.value == LIVER.value for c in codes):
                mask |= segment.mask
        if not mask.any():
            raise ValueError(f"{path}: no liver segment among {', '.join(found) or 'no segments'}")
    else:
        try:
            document = AnnotationDocument.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a liverview annotation file, DICOM SEG or NumPy mask ({exc})") from exc
        if document.series_instance_uid and document.series_instance_uid != volume.series_uid:
            raise ValueError(f"{path}: the outlines belong to series {document.series_instance_uid}, "
                             f"not to {volume.series_uid}")
        mask = np.zeros(volume.shape, dtype=bool)
        found = []
        for lesion in document.lesions:
            text = f"{lesion.label or ''} {lesion.note}".lower()
            found.append(lesion.label or lesion.note or lesion.id)
            if any(w in text for w in wanted):
                mask |= lesion_mask(volume, lesion)
        if not mask.any():
            raise ValueError(f"{path}: no outline labelled {' or '.join(labels)} (found: {', '.join(found) or 'none'})")
    return mask


def _load_numpy_mask(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as loaded:
        keys = list(loaded.keys())
        key = next((k for k in ("liver", "mask") if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None:
            raise ValueError(f"{path}: several arrays ({', '.join(keys)}); name the liver one 'liver'")
        return loaded[key]


# ---------------------------------------------------------------------------------------------
# The app's types: Volume + AnnotationDocument


def _phase_identity(patient: SimulatedPatient, image: PhaseImage | None) -> SeriesIdentity:
    phase = Phase.PORTAL_VENOUS.value if image is None else image.phase
    number = 1 + (0 if image is None else 1 + list(patient.phases).index(image.phase))
    series_uid = patient.series_uid if image is None else generate_uid(entropy_srcs=[patient.series_uid, phase])
    description = f"{GENERATOR} phantom (synthetic)" if image is None else f"{GENERATOR} phantom, {phase} (synthetic)"
    return SeriesIdentity(
        study_uid=patient.study_uid, series_uid=series_uid, frame_of_reference_uid=patient.frame_of_reference_uid,
        modality="CT", patient_name="", patient_id=patient.patient_id, patient_birth_date="", patient_sex="",
        study_date="", study_time="", study_description="simulated liver lesions", series_description=description,
        series_number=number)


def patient_volume(patient: SimulatedPatient, phase: str | None = None) -> Volume:
    """The patient as the app's :class:`Volume` (int16 HU, its own Series and SOP UIDs); with `phase`
    one of its other phases, as another series of the same study and Frame of Reference."""
    if patient.template is not None and (phase is None or phase == Phase.PORTAL_VENOUS.value):
        source = patient.template
        identity = dataclasses.replace(
            source.info.identity, series_uid=patient.series_uid,
            series_description=f"{source.info.identity.series_description} + simulated lesions".strip(),
        )
        info = dataclasses.replace(source.info, key=patient.series_uid, identity=identity)
        sop_uids = [generate_uid(entropy_srcs=[patient.series_uid, "sop", str(k)]) for k in range(source.shape[0])]
        return dataclasses.replace(source, array=patient.hu, info=info, sop_instance_uids=sop_uids,
                                   warnings=[], failed=[], loaded=np.ones(source.shape[0], dtype=bool))
    image = patient.phases[phase] if phase is not None and phase != Phase.PORTAL_VENOUS.value else None
    hu, spacing = (patient.hu, patient.spacing_mm_zyx) if image is None else (image.hu, image.spacing_mm_zyx)
    _, ny, nx = hu.shape
    origin = np.array([-(nx - 1) / 2.0 * spacing[2], -(ny - 1) / 2.0 * spacing[1], 0.0])
    if image is not None:
        # Slice 0 sits z_offset above the key series' slice 0; the anatomy moved by the breathing shift.
        origin = origin + [0.0, 0.0, image.z_offset_mm] + np.asarray(image.shift_mm[::-1])
    return Volume.from_array(hu, spacing, _phase_identity(patient, image), origin_mm=origin, window=(60.0, 150.0))


def write_patient_study(patient: SimulatedPatient, folder: Path) -> dict[str, Path]:
    """The patient's phases as DICOM series of one study and Frame of Reference, one folder per phase
    (`patient_volume`'s UIDs, geometry and breathing shifts); returns phase -> folder."""
    folders = {}
    for number, phase in enumerate([Phase.PORTAL_VENOUS.value, *patient.phases], start=1):
        volume = patient_volume(patient, None if phase == Phase.PORTAL_VENOUS.value else phase)
        placement = SeriesPlacement(volume.study_uid, volume.series_uid, volume.frame_of_reference_uid,
                                    STUDY_DATETIME, series_number=number)
        folders[phase] = Path(folder) / phase
        write_ct_series(volume.array, volume.spacing_mm, folders[phase], PatientInfo(),
                        f"Liver {Phase(phase).value.replace('_', ' ')} (synthetic)", placement,
                        origin_mm_xyz=(float(volume.positions_mm[0][0]), float(volume.positions_mm[0][1]),
                                       float(volume.positions_mm[0][2])))
    return folders


def patient_document(patient: SimulatedPatient, volume: Volume | None = None) -> AnnotationDocument:
    """One lesion per simulated lesion, reader "simulator", outlines traced from the ground truth,
    and the simulator's parameters in ``Lesion.synth``."""
    volume = volume or patient_volume(patient)
    document = AnnotationDocument(volume.study_uid, volume.series_uid, volume.frame_of_reference_uid,
                                  source=f"{GENERATOR} {GENERATOR_VERSION} simulated ground truth",
                                  created="2026-01-01T09:00:00+00:00", modified="2026-01-01T09:00:00+00:00")
    for lesion in patient.lesions:
        outlines = lesion.outlines or outline_mask(lesion.mask)[1]
        rois = [
            Roi(slice_index=z, points_xy=outline, kind="polygon", sop_instance_uid=volume.sop_instance_uids[z],
                id=f"{lesion.lesion_id}-r{z}-{n}")
            for z, traced in outlines.items()
            for n, outline in enumerate(traced)
        ]
        document.lesions.append(Lesion(
            reader=READER, label=lesion.lesion_class.value, confidence="certain", rois=rois, id=lesion.lesion_id,
            created=document.created, modified=document.created, label_source=READER,
            note=f"simulated {lesion.lesion_class.value}, seed {lesion.spec.seed}",
            synth=lesion.synth_record(patient),
        ))
    return document


# ---------------------------------------------------------------------------------------------
# Datasets


def plan_dataset(
    lesions_per_class: int,
    seed: int,
    *,
    patients: int | None = None,
    config: SimulatorConfig = DEFAULT_CONFIG,
) -> list[PatientPlan]:
    """Split ``lesions_per_class`` lesions of every class over patients, classes mixed at random.

    Without ``patients`` each patient gets ``config.lesions_per_patient`` lesions (drawn, the last
    patients included); with it, the lesions are dealt out as evenly as possible. Each patient's seed
    comes from (seed, index).
    """
    if lesions_per_class < 1:
        raise ValueError("lesions per class must be at least 1")
    rng = np.random.default_rng(_seed_streams(seed, 1, 0xDA)[0])
    labels = [c for c in config.classes for _ in range(lesions_per_class)]
    order = rng.permutation(len(labels))
    labels = [labels[i] for i in order]
    if patients is not None:
        if patients < 1:
            raise ValueError("the number of patients must be at least 1")
        groups = [list(g) for g in np.array_split(np.arange(len(labels)), min(patients, len(labels)))]
    else:
        groups, start = [], 0
        lo, hi = config.lesions_per_patient
        while start < len(labels):
            n = int(rng.integers(lo, hi + 1))
            left = len(labels) - start
            if 0 < left - n < lo:  # the last patient would get fewer than `lo`: deal the rest now
                n = left if left <= hi else left - lo
            groups.append(list(range(start, min(start + n, len(labels)))))
            start += n
    plans = []
    for index, group in enumerate(groups):
        patient_seed = int(np.random.SeedSequence([_SALT, int(seed), index]).generate_state(1)[0])
        plans.append(PatientPlan(index, patient_seed, tuple(labels[i] for i in group)))
    return plans


# Worker-process state for simulations on a real series (sent once per worker, not per task).
_WORKER_CT: dict[str, Any] = {}


def _worker_init(ct: dict[str, Any] | None) -> None:
    cv2.setNumThreads(1)
    _WORKER_CT.clear()
    if ct is not None:
        _WORKER_CT.update(ct)


#: Fresh seeds a patient gets when its lesions do not fit (then NoRoomError reaches the caller).
RETRIES = 4


def retry_seed(seed: int, attempt: int) -> int:
    """The seed of a patient's ``attempt``-th retry (attempt 0 is ``seed`` itself)."""
    if attempt == 0:
        return int(seed)
    return int(np.random.SeedSequence([_SALT, int(seed), 0xEE, attempt]).generate_state(1)[0])


def _simulate_plan(plan: PatientPlan, config: SimulatorConfig, ct: dict[str, Any] | None = None) -> SimulatedPatient:
    """The plan's patient; if its lesions do not fit, the same classes with a retry seed (the
    patient's recorded seed is the one that worked, so the record still regenerates it)."""
    ct = ct if ct is not None else (_WORKER_CT or None)
    for attempt in range(RETRIES + 1):
        seed = retry_seed(plan.seed, attempt)
        try:
            if ct is None:
                return simulate_patient(seed, plan.classes, config)
            return simulate_on_volume(ct["volume"], ct["liver_mask"], len(plan.classes), seed,
                                      lesion_classes=plan.classes, config=config)
        except NoRoomError as exc:
            if attempt == RETRIES:
                where = "the phantom's liver" if ct is None else "the liver mask"
                raise NoRoomError(f"patient {plan.index + 1}: {len(plan.classes)} lesions do not fit into {where} "
                                  f"({exc}); use a larger liver mask, smaller lesions or more patients") from exc
            logger.info("patient %d: %s; retrying with another seed", plan.index + 1, exc)
    raise AssertionError("unreachable")


def _iter_patients(plans: Sequence[PatientPlan], config: SimulatorConfig, ct: dict[str, Any] | None,
                   workers: int, should_stop: ShouldStop | None) -> Iterator[SimulatedPatient]:
    """Patients in plan order (identical whatever ``workers`` is)."""
    if workers <= 1 or len(plans) <= 1:
        for plan in plans:
            check_stop(should_stop)
            yield _simulate_plan(plan, config, ct)
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                                initargs=(ct,)) as pool:
        pending: list[concurrent.futures.Future[SimulatedPatient]] = []
        queue = list(plans)
        try:
            while queue or pending:
                # A deep queue keeps every worker busy while a slow patient holds up the head.
                while queue and len(pending) < 8 * workers:
                    pending.append(pool.submit(_simulate_plan, queue.pop(0), config))
                check_stop(should_stop)
                patient = pending.pop(0).result()
                if ct is not None:
                    patient.template = ct["volume"]
                yield patient
        finally:
            for future in pending:
                future.cancel()


def _check_target(folder: Path) -> None:
    """Refuse a folder that holds something other than a liverview dataset this version writes."""
    read_manifest(folder, missing_ok=True)


def _append_patient(folder: Path, staging: Path, synth: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Move one patient's staged export into ``folder``: patches first, then its lines (with their
    ``synth`` objects) appended to lesions.jsonl in one write."""
    records = read_lesion_lines(staging / "lesions.jsonl")
    (folder / "patches").mkdir(parents=True, exist_ok=True)
    for record in records:
        os.replace(staging / record["file"], folder / record["file"])
        record["synth"] = synth[record["lesion_uid"]]
    append_lesion_lines(folder, records)
    return records


def _refresh_index(folder: Path, volume: Volume, run: dict[str, Any]) -> None:
    """Let the app's export rewrite lesions.jsonl and dataset.json over everything in the folder
    (an export of no lesions: it reads, deduplicates by lesion UID, counts the classes and writes
    both files atomically), then record the run in dataset.json next to the earlier runs (the
    export's manifest keeps only its own keys, so they are carried over here)."""
    manifest_path = folder / "dataset.json"
    earlier: list[dict[str, Any]] = []
    description = None
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text(encoding="utf-8"))
        earlier = [r for r in previous.get("simulator_runs", []) if r.get("run_id") != run["run_id"]]
        description = previous.get("description")
    empty = AnnotationDocument(volume.study_uid, volume.series_uid, volume.frame_of_reference_uid)
    export_dataset(volume, empty, folder, pseudonymize=False)
    with DatasetFolderLock(folder):
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        manifest["description"] = description or "simulated liver lesions (liverview-synth; see docs/synth.md)"
        manifest["simulator_runs"] = [*earlier, run]
        write_json_atomic(manifest_path, manifest)


def write_simulated_dataset(
    out_dir: str | os.PathLike[str],
    lesions_per_class: int,
    seed: int = 0,
    *,
    patients: int | None = None,
    config: SimulatorConfig = DEFAULT_CONFIG,
    ct_volume: Volume | None = None,
    liver_mask: np.ndarray | None = None,
    pseudonym_key: bytes | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> DatasetSummary:
    """Write ``lesions_per_class`` lesions of every class into the dataset folder ``out_dir``.

    Phantom patients by default; with ``ct_volume`` and ``liver_mask``, every "patient" is the real
    series with its own set of simulated lesions (one real patient: all lines share its pseudonym,
    so a grouped split keeps them together). Each patient goes through the app's
    :func:`~liverview.annotations.export_dataset.export_dataset`, pseudonymised as the app does
    (patient ``LV-…``, remapped UIDs, no name or birth date; :class:`SimulatorPseudonymizer` leaves
    the reader "simulator" as is) with ``pseudonym_key`` — default: the public
    :data:`PHANTOM_PSEUDONYM_KEY` for phantoms, the user's own key for a real series (so its lines
    carry the same pseudonym as the app's exports of that patient) — into a staging folder;
    its patches move into ``out_dir`` and its lines, each with a ``synth`` object, are appended to
    lesions.jsonl (so the cost per patient does not grow with the dataset). At the end an export of
    no lesions lets the app's code rewrite lesions.jsonl and dataset.json over the whole folder,
    and dataset.json gets a ``simulator_runs`` entry. A folder that already holds a dataset is
    added to, as the app's export does. ``workers`` > 1 simulates patients in that many processes
    (``spawn``: the calling script needs the usual ``if __name__ == "__main__"`` guard); the
    output does not depend on it.

    If ``should_stop()`` turns True, :class:`Cancelled` is raised after the patient in
    hand; the patients written so far stay as a consistent dataset.
    """
    started = time.perf_counter()
    folder = Path(out_dir)
    plans = plan_dataset(lesions_per_class, seed, patients=patients, config=config)
    ct = None
    if (ct_volume is None) != (liver_mask is None):
        raise ValueError("a real CT series needs a liver mask, and a liver mask a series")
    if ct_volume is not None:
        mask = np.asarray(liver_mask, dtype=bool)
        if mask.shape != ct_volume.shape or not mask.any() or not ct_volume.is_hu:
            raise ValueError(f"the liver mask ({mask.shape}, {int(mask.sum())} voxels) must be a non-empty mask on "
                             f"the grid of the CT series ({ct_volume.shape}), in Hounsfield units")
        ct = {"volume": ct_volume, "liver_mask": mask}
        pseudonymizer = SimulatorPseudonymizer(pseudonym_key or load_or_create_key(user_data_dir() / KEY_FILE_NAME))
    else:
        pseudonymizer = SimulatorPseudonymizer(pseudonym_key or PHANTOM_PSEUDONYM_KEY)
    _check_target(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging_root = folder / f".synth-staging-{os.getpid()}"
    total = sum(len(p.classes) for p in plans)
    run_id = hashlib.sha256(json.dumps([GENERATOR_VERSION, seed, lesions_per_class, patients, config.to_dict(),
                                        None if ct is None else ct_volume.series_uid]).encode()).hexdigest()[:12]
    per_class = {c.value: 0 for c in config.classes}
    written = done_patients = 0
    last_volume: Volume | None = None
    if progress is not None:
        progress(0.0, f"Simulating {total} lesions in {len(plans)} patients")
    try:
        for patient in _iter_patients(plans, config, ct, workers, should_stop):
            volume = patient_volume(patient)
            document = patient_document(patient, volume)
            staging = staging_root / str(done_patients)
            export_dataset(volume, document, staging, pseudonymize=True, pseudonymizer=pseudonymizer,
                           phase=Phase.PORTAL_VENOUS.value,
                           other_phases=[PhaseSource(phase, patient_volume(patient, phase), "simulated")
                                         for phase in patient.phases])
            identity = export_identity(volume, pseudonymize=True, pseudonymizer=pseudonymizer)
            synth = {lesion_uid(identity, lesion): lesion.synth or {} for lesion in document.lesions}
            with DatasetFolderLock(folder):
                records = _append_patient(folder, staging, synth)
            shutil.rmtree(staging, ignore_errors=True)
            for record in records:
                per_class[record["label"]] = per_class.get(record["label"], 0) + 1
            written += len(records)
            done_patients += 1
            last_volume = volume
            if progress is not None:
                progress(0.99 * written / max(total, 1),
                         f"Patient {done_patients}/{len(plans)}: {written}/{total} lesions")
            check_stop(should_stop)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
        if last_volume is not None:
            _refresh_index(folder, last_volume, {
                "run_id": run_id, "generator": GENERATOR, "generator_version": GENERATOR_VERSION,
                "liverview_version": __version__, "seed": seed, "lesions_per_class": lesions_per_class,
                "patients": len(plans), "patients_written": done_patients, "lesions_written": written,
                "source": "phantom" if ct is None else "ct",
                "source_series_uid": None if ct is None else pseudonymizer.remap_uid(ct["volume"].series_uid),
                "complete": done_patients == len(plans), "config": config.to_dict(),
            })
    seconds = time.perf_counter() - started
    if progress is not None:
        progress(1.0, f"Wrote {written} lesions of {done_patients} patients in {seconds:.1f} s")
    logger.info("simulated %d lesions (%s) into %s in %.1f s", written, per_class, folder, seconds)
    return DatasetSummary(folder, done_patients, written, per_class, seconds)


__all__ = [
    "DEFAULT_CONFIG",
    "GENERATOR_VERSION",
    "READER",
    "PHANTOM_PSEUDONYM_KEY",
    "DatasetSummary",
    "NoRoomError",
    "PatientPlan",
    "SimulatedLesion",
    "SimulatedPatient",
    "SimulatorConfig",
    "SimulatorPseudonymizer",
    "draw_diameters",
    "estimate_enhancement",
    "insert_lesion_with_slice_profile",
    "load_liver_mask",
    "outline_mask",
    "patient_document",
    "patient_volume",
    "phantom_patient_id",
    "plan_dataset",
    "simulate_on_volume",
    "simulate_patient",
    "write_patient_study",
    "write_simulated_dataset",
]
