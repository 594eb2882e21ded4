"""Synthetic focal liver lesions with their portal-venous-phase CT appearance.

A lesion is a lobulated ellipsoid described completely by a :class:`LesionSpec`; its internal
structure (enhancing nodules, mosaic texture, capsule, rim, necrosis) is drawn from the spec's own
``seed``, so a recorded spec reproduces the lesion voxel for voxel. The appearance per class, with
the sources it follows, is described in docs/synth.md.

Coordinates: ``centre_mm_zyx`` is in the volume's array frame — millimetres from the centre of
voxel (0, 0, 0) along the (z, y, x) array axes — so it does not depend on where the series sits in
patient space.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from liverview.annotations.labels import LesionClass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LesionSpec:
    """Everything needed to reproduce one synthetic lesion.

    Shape: an ellipsoid with semi-axes ``radii_mm_zyx``, turned by ``rotation_deg`` in the axial
    plane, whose surface is pushed in and out by ``lobe_count`` smooth bumps of relative height
    ``lobulation``. ``margin_mm`` is the width over which the lesion blends into the liver
    (sharp cyst wall ~0.3 mm, ill-defined metastasis ~2 mm).

    Appearance (HU): ``core_hu`` is the bulk; ``texture_hu`` / ``texture_mm`` add blotchy
    heterogeneity; ``necrosis_fraction`` of the radius around the centre fades to
    ``necrosis_hu``. ``enhancing_hu`` (None = no enhancing part) is the attenuation of the
    enhancing component: for "hemangioma" ``nodule_count`` peripheral nodules of radius
    ``enhancing_mm``; for "hcc" a capsule ``enhancing_mm`` thick plus thin septa between
    ``nodule_count`` mosaic compartments whose attenuation scatters by ``texture_hu``; for
    "metastasis" a rim ``enhancing_mm`` thick.
    """

    lesion_class: LesionClass
    seed: int
    centre_mm_zyx: tuple[float, float, float]
    radii_mm_zyx: tuple[float, float, float]
    core_hu: float
    rotation_deg: float = 0.0
    lobulation: float = 0.0
    lobe_count: int = 0
    margin_mm: float = 0.4
    texture_hu: float = 0.0
    texture_mm: float = 4.0
    necrosis_fraction: float = 0.0
    necrosis_hu: float = 20.0
    enhancing_hu: float | None = None
    enhancing_mm: float = 0.0
    nodule_count: int = 0

    @property
    def diameter_mm(self) -> float:
        """Largest axis of the underlying ellipsoid (lobulation adds up to ``lobulation`` more)."""
        return 2.0 * max(self.radii_mm_zyx)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters, ``class`` first (the ground-truth file's ``synth`` object)."""
        values = dataclasses.asdict(self)
        values.pop("lesion_class")
        for key in ("centre_mm_zyx", "radii_mm_zyx"):
            values[key] = list(values[key])
        return {"class": self.lesion_class.value, **values}

    @property
    def variant(self) -> str:
        """The appearance this lesion was drawn with, in the reader's terms (the variants of
        `sample_varied_lesion_spec`): where a classifier errs is best told by variant."""
        c = self.lesion_class
        if c is LesionClass.BENIGN_CYST:
            return "cyst"
        if c is LesionClass.HEMANGIOMA:
            if self.enhancing_hu is None:
                return "flash-filling"
            return "peripheral nodules" + (", central scar" if self.necrosis_fraction > 0 else "")
        if c is LesionClass.HCC:
            return ", ".join(["capsule" if self.enhancing_hu is not None else "no capsule",
                              "mosaic" if self.nodule_count > 0 else "no mosaic"])
        centre = ("no distinct centre" if self.necrosis_fraction <= 0 else
                  "dense centre" if self.necrosis_hu > self.core_hu else "necrotic centre")
        return ", ".join(["rim" if self.enhancing_hu is not None else "no rim", centre])

    @classmethod
    def from_record(cls, values: dict[str, Any]) -> LesionSpec:
        """The spec inside a ground-truth or dataset ``synth`` object, which also carries provenance
        (generator, patient, ...) beside the parameters."""
        known = {f.name for f in dataclasses.fields(cls)} | {"class"}
        return cls.from_dict({k: v for k, v in values.items() if k in known})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LesionSpec:
        """Inverse of :meth:`to_dict`."""
        fields = dict(values)
        lesion_class = LesionClass(fields.pop("class"))
        fields["centre_mm_zyx"] = tuple(fields["centre_mm_zyx"])
        fields["radii_mm_zyx"] = tuple(fields["radii_mm_zyx"])
        return cls(lesion_class=lesion_class, **fields)


def sample_lesion_spec(
    lesion_class: LesionClass,
    centre_mm_zyx: tuple[float, float, float],
    diameter_mm: float,
    seed: int,
) -> LesionSpec:
    """Draw class-typical parameters (ranges in docs/synth.md) for a lesion of about this size."""
    rng = np.random.default_rng(seed)
    radius = diameter_mm / 2.0
    radii = tuple(float(radius * f) for f in rng.uniform(0.85, 1.0, size=3))
    common = dict(
        lesion_class=lesion_class,
        seed=seed,
        centre_mm_zyx=tuple(float(c) for c in centre_mm_zyx),
        radii_mm_zyx=radii,
        rotation_deg=float(rng.uniform(0.0, 180.0)),
    )
    if lesion_class is LesionClass.BENIGN_CYST:
        return LesionSpec(
            **common,
            core_hu=float(rng.uniform(0.0, 10.0)),
            lobulation=float(rng.uniform(0.0, 0.04)),
            lobe_count=3,
            margin_mm=0.3,
        )
    if lesion_class is LesionClass.HEMANGIOMA:
        return LesionSpec(
            **common,
            core_hu=float(rng.uniform(40.0, 55.0)),
            lobulation=float(rng.uniform(0.05, 0.12)),
            lobe_count=5,
            margin_mm=0.6,
            texture_hu=4.0,
            texture_mm=3.0,
            enhancing_hu=float(rng.uniform(150.0, 172.0)),
            enhancing_mm=float(np.clip(radius * rng.uniform(0.2, 0.3), 2.5, 8.0)),
            nodule_count=int(rng.integers(8, 13)),
        )
    if lesion_class is LesionClass.HCC:
        large = diameter_mm > 35.0
        return LesionSpec(
            **common,
            core_hu=float(rng.uniform(66.0, 80.0)),
            lobulation=float(rng.uniform(0.04, 0.10)),
            lobe_count=5,
            margin_mm=0.5,
            texture_hu=float(rng.uniform(12.0, 18.0)),
            texture_mm=float(rng.uniform(2.0, 3.0)),
            necrosis_fraction=float(rng.uniform(0.15, 0.25)) if large else 0.0,
            necrosis_hu=float(rng.uniform(30.0, 45.0)),
            enhancing_hu=float(rng.uniform(125.0, 140.0)),
            enhancing_mm=float(rng.uniform(1.5, 2.2)),
            nodule_count=int(np.clip(round(diameter_mm / 5.0), 3, 14)),
        )
    if lesion_class is LesionClass.METASTASIS:
        return LesionSpec(
            **common,
            core_hu=float(rng.uniform(40.0, 55.0)),
            lobulation=float(rng.uniform(0.08, 0.18)),
            lobe_count=6,
            margin_mm=float(rng.uniform(1.2, 2.0)),
            texture_hu=5.0,
            texture_mm=3.0,
            necrosis_fraction=float(rng.uniform(0.25, 0.45)) if diameter_mm > 20.0 else 0.0,
            necrosis_hu=float(rng.uniform(22.0, 35.0)),
            enhancing_hu=float(rng.uniform(75.0, 90.0)),
            enhancing_mm=float(np.clip(radius * 0.18, 1.2, 4.0)),
        )
    raise ValueError(f"unknown lesion class {lesion_class!r}")


@dataclass(frozen=True)
class Enhancement:
    """A patient's portal-venous enhancement, which lesion attenuation refers to.

    ``liver_hu`` is the parenchyma; ``blood_pool_hu`` the portal-venous blood (main portal vein).
    """

    liver_hu: float
    blood_pool_hu: float


def sample_varied_lesion_spec(
    lesion_class: LesionClass,
    centre_mm_zyx: tuple[float, float, float],
    diameter_mm: float,
    seed: int,
    enhancement: Enhancement,
    jitter_mm_zyx: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> LesionSpec:
    """The lesion simulator's draw: the class's whole documented spectrum, relative to the patient.

    Wider than :func:`sample_lesion_spec` (the demo's textbook lesions): attenuation is drawn
    relative to the patient's liver (washout, hypoattenuation) or blood pool (hemangioma nodules),
    variants appear with the frequencies the sources report (flash-filling small hemangiomas, HCC
    without a visible capsule or mosaic, metastases without an enhancing rim or with a denser
    centre), and shape and margin vary more. ``jitter_mm_zyx`` moves the centre by up to half that
    much along each axis, so centres do not all sit on voxel centres. Ranges: docs/synth.md.
    """
    rng = np.random.default_rng([seed, 7])
    liver, blood = float(enhancement.liver_hu), float(enhancement.blood_pool_hu)
    d = float(diameter_mm)
    radius = d / 2.0
    # The largest axis is the requested diameter; the other two are 75-100 % of it.
    radii = tuple(float(radius * f) for f in rng.permutation([1.0, *rng.uniform(0.75, 1.0, size=2)]))
    centre = tuple(float(c + j * rng.uniform(-0.5, 0.5)) for c, j in zip(centre_mm_zyx, jitter_mm_zyx, strict=True))
    common = dict(
        lesion_class=lesion_class,
        seed=seed,
        centre_mm_zyx=centre,
        radii_mm_zyx=radii,
        rotation_deg=float(rng.uniform(0.0, 180.0)),
    )

    def chance(p: float) -> bool:
        return bool(rng.random() < p)

    if lesion_class is LesionClass.BENIGN_CYST:
        return LesionSpec(
            **common,
            core_hu=float(rng.uniform(0.0, 18.0)),
            lobulation=float(rng.uniform(0.0, 0.05)),
            lobe_count=int(rng.integers(3, 6)),
            margin_mm=float(rng.uniform(0.2, 0.5)),
            texture_hu=float(rng.uniform(0.0, 2.0)),
            texture_mm=3.0,
        )
    if lesion_class is LesionClass.HEMANGIOMA:
        flash_probability = 0.6 if d < 12.0 else 0.3 if d < 20.0 else 0.0
        if chance(flash_probability):
            # Small "flash-filling" (capillary) hemangioma: uniformly filled, isodense to blood.
            return LesionSpec(
                **common,
                core_hu=float(blood - rng.uniform(5.0, 25.0)),
                lobulation=float(rng.uniform(0.02, 0.08)),
                lobe_count=int(rng.integers(3, 6)),
                margin_mm=float(rng.uniform(0.4, 0.7)),
                texture_hu=float(rng.uniform(3.0, 6.0)),
                texture_mm=2.0,
            )
        scar = d > 50.0 and chance(0.5)
        return LesionSpec(
            **common,
            core_hu=float(np.clip(liver - rng.uniform(35.0, 75.0), 30.0, 85.0)),
            lobulation=float(rng.uniform(0.03, 0.14)),
            lobe_count=int(rng.integers(4, 7)),
            margin_mm=float(rng.uniform(0.4, 0.9)),
            texture_hu=float(rng.uniform(3.0, 8.0)),
            texture_mm=float(rng.uniform(2.0, 4.0)),
            necrosis_fraction=float(rng.uniform(0.1, 0.25)) if scar else 0.0,
            necrosis_hu=float(rng.uniform(20.0, 40.0)),
            enhancing_hu=float(blood - rng.uniform(0.0, 30.0)),
            enhancing_mm=float(np.clip(radius * rng.uniform(0.1, 0.25), 2.0, 6.5)),
            nodule_count=int(np.clip(round(rng.uniform(0.8, 1.3) * (3.0 + d / 8.0)), 3, 12)),
        )
    if lesion_class is LesionClass.HCC:
        # Washout: hypoattenuating to the liver; the mosaic varies around that, mostly staying below.
        washout = float(rng.uniform(15.0, 50.0))
        core = float(max(liver - washout, 45.0))
        mosaic = not (d < 15.0 and chance(0.6))
        capsule = chance(0.55 if d < 20.0 else 0.8)
        necrosis = d > 30.0 and chance(0.6)
        return LesionSpec(
            **common,
            core_hu=core,
            lobulation=float(rng.uniform(0.02, 0.12)),
            lobe_count=int(rng.integers(4, 7)),
            margin_mm=float(rng.uniform(0.3, 0.8)),
            texture_hu=float(3.0 + washout * rng.uniform(0.25, 0.6) if mosaic else rng.uniform(2.0, 5.0)),
            texture_mm=float(rng.uniform(1.5, 3.5)),
            necrosis_fraction=float(rng.uniform(0.1, 0.35)) if necrosis else 0.0,
            necrosis_hu=float(rng.uniform(20.0, 45.0)),
            enhancing_hu=float(liver + rng.uniform(0.0, 35.0)) if capsule else None,
            enhancing_mm=float(min(rng.uniform(0.8, 2.0), 0.08 * d)),
            nodule_count=int(np.clip(round(d / rng.uniform(4.0, 7.0)), 2, 14)) if mosaic else 0,
        )
    if lesion_class is LesionClass.METASTASIS:
        core = float(max(liver - rng.uniform(30.0, 75.0), 25.0))
        rim = chance(0.84)
        # A distinct centre in most lesions over 15 mm: necrotic (low) or, in about half of the
        # colorectal metastases of [M1], denser than the rest of the lesion.
        necrosis = d > 15.0 and chance(0.85)
        dense_centre = chance(0.6)
        necrosis_hu = core + rng.uniform(5.0, 25.0) if dense_centre else rng.uniform(10.0, 35.0)
        return LesionSpec(
            **common,
            core_hu=core,
            lobulation=float(rng.uniform(0.05, 0.2)),
            lobe_count=int(rng.integers(5, 8)),
            margin_mm=float(rng.uniform(0.8, 2.5)),
            texture_hu=float(rng.uniform(3.0, 9.0)),
            texture_mm=float(rng.uniform(2.0, 4.0)),
            necrosis_fraction=float(rng.uniform(0.2, 0.5)) if necrosis else 0.0,
            necrosis_hu=float(necrosis_hu),
            enhancing_hu=float(min(core + rng.uniform(15.0, 50.0), liver + 15.0)) if rim else None,
            enhancing_mm=float(np.clip(radius * rng.uniform(0.12, 0.28), 1.0, 5.0)),
        )
    raise ValueError(f"unknown lesion class {lesion_class!r}")


@dataclass
class _LesionGeometry:
    """Per-voxel geometry of a lesion inside its bounding box."""

    box: tuple[slice, slice, slice]
    offset_mm: tuple[np.ndarray, np.ndarray, np.ndarray]  # (z, y, x) from the centre, broadcastable
    depth_mm: np.ndarray  # distance inside the surface along the ray from the centre (< 0 outside)
    relative_radius: np.ndarray  # 0 at the centre, 1 on the surface


def lesion_footprint(
    spec: LesionSpec,
    shape_zyx: tuple[int, int, int],
    spacing_mm_zyx: tuple[float, float, float],
    grow_mm: float = 0.0,
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Bounding box and boolean mask of the voxels a lesion reaches, grown by ``grow_mm``.

    With ``grow_mm = 0`` this is the lesion's ground-truth extent before clipping to the liver;
    placement code grows it by the margin plus a gap to keep lesions apart.
    """
    geometry = _lesion_geometry(spec, shape_zyx, spacing_mm_zyx, grow_mm)
    return geometry.box, geometry.depth_mm >= -grow_mm


def insert_lesion(
    hu: np.ndarray,
    liver_mask: np.ndarray,
    spec: LesionSpec,
    spacing_mm_zyx: tuple[float, float, float],
) -> np.ndarray:
    """Paint one lesion into a float32 ``(z, y, x)`` HU volume in place; return its boolean mask.

    The lesion is blended into the existing (noise-free) tissue over ``spec.margin_mm`` and never
    reaches outside ``liver_mask``. The returned mask (full volume size) is the ground truth: the
    voxels at least half lesion. Fragments of fewer than 4 pixels in a slice — where a polar cap
    just grazes a slice — are left out of the mask and kept faint in the image, so that every
    labelled slice has an outline worth drawing.

    All randomness comes from ``spec.seed``; the caller's generator is not used, so the recorded
    spec alone reproduces the lesion.
    """
    rng = np.random.default_rng(spec.seed)
    geometry = _lesion_geometry(spec, hu.shape, spacing_mm_zyx, spec.margin_mm)
    box = geometry.box
    inside_liver = liver_mask[box]
    depth = geometry.depth_mm
    alpha = np.clip(0.5 + depth / spec.margin_mm, 0.0, 1.0) * inside_liver
    mask = (depth >= 0.0) & inside_liver
    _drop_slivers(mask, alpha)

    value = _lesion_values(spec, geometry, spacing_mm_zyx, rng)
    region = hu[box]
    region += (alpha * (value - region)).astype(np.float32)
    full = np.zeros(hu.shape, dtype=bool)
    full[box] = mask
    return full


def _lesion_geometry(
    spec: LesionSpec,
    shape_zyx: tuple[int, int, int],
    spacing_mm_zyx: tuple[float, float, float],
    reach_mm: float,
) -> _LesionGeometry:
    sp = np.asarray(spacing_mm_zyx, dtype=float)
    centre = np.asarray(spec.centre_mm_zyx, dtype=float)
    radii = np.asarray(spec.radii_mm_zyx, dtype=float)
    extent = radii.max() * (1.0 + 2.0 * spec.lobulation) + reach_mm + sp
    lo = np.maximum(np.floor((centre - extent) / sp).astype(int), 0)
    hi = np.minimum(np.ceil((centre + extent) / sp).astype(int) + 1, shape_zyx)
    hi = np.maximum(hi, lo)
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    dz = (np.arange(lo[0], hi[0]) * sp[0] - centre[0]).astype(np.float32)[:, None, None]
    dy = (np.arange(lo[1], hi[1]) * sp[1] - centre[1]).astype(np.float32)[None, :, None]
    dx = (np.arange(lo[2], hi[2]) * sp[2] - centre[2]).astype(np.float32)[None, None, :]

    c, s = math.cos(math.radians(spec.rotation_deg)), math.sin(math.radians(spec.rotation_deg))
    u = dy * c + dx * s
    v = -dy * s + dx * c
    nz, nu, nv = dz / radii[0], u / radii[1], v / radii[2]
    rho = np.sqrt(nz**2 + nu**2 + nv**2) + np.float32(1e-6)
    distance = np.sqrt(dz**2 + dy**2 + dx**2)
    surface = _lobulation(spec, (nz / rho, nu / rho, nv / rho))
    # Distance from the voxel to the surface along the ray from the centre: the ray's ellipsoid
    # radius (distance / rho) times how far rho is from the (lobulated) surface.
    depth = distance / rho * (surface - rho)
    return _LesionGeometry(box=box, offset_mm=(dz, dy, dx), depth_mm=depth, relative_radius=rho / surface)


def _lobulation(spec: LesionSpec, direction: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Surface radius factor per ray: 1 plus smooth bumps (von Mises-Fisher lobes) of both signs."""
    if spec.lobulation <= 0.0 or spec.lobe_count <= 0:
        return np.ones(np.broadcast_shapes(*(d.shape for d in direction)), dtype=np.float32)
    # Lobes come from their own generator so that adding texture never moves the outline.
    rng = np.random.default_rng([spec.seed, 1])
    axes = rng.normal(size=(spec.lobe_count, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    signs = rng.choice([-1.0, 1.0], size=spec.lobe_count)
    bumps = 0.0
    for (az, au, av), sign in zip(axes, signs, strict=True):
        cosine = direction[0] * az + direction[1] * au + direction[2] * av
        bumps = bumps + sign * np.exp(4.0 * (cosine - 1.0))
    return (1.0 + spec.lobulation * np.clip(bumps, -1.5, 1.5)).astype(np.float32)


def _drop_slivers(mask: np.ndarray, alpha: np.ndarray) -> None:
    for k in range(mask.shape[0]):
        if not mask[k].any():
            continue
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask[k].astype(np.uint8), connectivity=8)
        for label in range(1, count):
            if stats[label, cv2.CC_STAT_AREA] < 4:
                sliver = labels == label
                mask[k][sliver] = False
                alpha[k][sliver] = np.minimum(alpha[k][sliver], 0.45)


def _lesion_values(
    spec: LesionSpec,
    geometry: _LesionGeometry,
    spacing_mm_zyx: tuple[float, float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Attenuation of the lesion tissue at every voxel of its box (before blending into liver)."""
    shape = geometry.depth_mm.shape
    value = np.full(shape, spec.core_hu, dtype=np.float32)
    septa = None
    if spec.lesion_class is LesionClass.HCC and spec.nodule_count > 1:
        value, septa = _mosaic(spec, geometry, rng)
    if spec.texture_hu > 0.0:
        field = _smooth_noise(shape, spec.texture_mm, spacing_mm_zyx, rng)
        # tanh turns smooth noise into patches with fairly sharp borders: a mosaic, not fog.
        value += np.float32(spec.texture_hu) * np.tanh(1.5 * field)
    if spec.necrosis_fraction > 0.0:
        w = np.clip((spec.necrosis_fraction - geometry.relative_radius) / 0.1 + 0.5, 0.0, 1.0)
        value += w * (spec.necrosis_hu - value)
    if spec.enhancing_hu is None:
        return value
    if spec.lesion_class is LesionClass.HEMANGIOMA:
        w = _peripheral_nodules(spec, geometry, rng)
    else:
        w = np.clip((spec.enhancing_mm - geometry.depth_mm) / 0.8 + 0.5, 0.0, 1.0)
        if septa is not None:
            w = np.maximum(w, septa)
    return value + w * (spec.enhancing_hu - value)


def _mosaic(spec: LesionSpec, geometry: _LesionGeometry, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """HCC mosaic: Voronoi compartments of differing attenuation and the septa between them.

    Returns the compartment attenuation and a septum weight (0..1, about 1 mm wide, kept a
    fainter than the capsule).
    """
    dz, dy, dx = geometry.offset_mm
    radii = np.asarray(spec.radii_mm_zyx)
    # Seeds uniformly inside the ellipsoid (rejection sampling in the unit ball).
    seeds = []
    while len(seeds) < spec.nodule_count:
        p = rng.uniform(-1.0, 1.0, size=3)
        if p @ p <= 1.0:
            seeds.append(p * radii * 0.85)
    c, s = math.cos(math.radians(spec.rotation_deg)), math.sin(math.radians(spec.rotation_deg))
    nearest = np.full(geometry.depth_mm.shape, np.inf, dtype=np.float32)
    second = np.full(geometry.depth_mm.shape, np.inf, dtype=np.float32)
    value = np.full(geometry.depth_mm.shape, spec.core_hu, dtype=np.float32)
    levels = spec.core_hu + spec.texture_hu * rng.uniform(-1.0, 1.0, size=spec.nodule_count)
    for (sz, su, sv), level in zip(seeds, levels, strict=True):
        sy, sx = su * c - sv * s, su * s + sv * c
        dist = np.sqrt((dz - sz) ** 2 + (dy - sy) ** 2 + (dx - sx) ** 2)
        closer = dist < nearest
        second = np.where(closer, nearest, np.minimum(second, dist))
        nearest = np.where(closer, dist, nearest)
        value = np.where(closer, np.float32(level), value)
    # Half the gap between the two nearest seeds approximates the distance to the septum.
    septa = np.clip((0.6 - (second - nearest) / 2.0) / 0.6 + 0.5, 0.0, 1.0) * 0.4
    return value, septa.astype(np.float32)


def _peripheral_nodules(spec: LesionSpec, geometry: _LesionGeometry, rng: np.random.Generator) -> np.ndarray:
    """Weight (0..1) of discontinuous nodules just inside the lesion's surface.

    Each nodule is a ball of about ``enhancing_mm`` radius centred that far inside the surface,
    stretched towards the centre by a random amount: the centripetal fill-in of a portal-venous
    image, caught at a different stage for each nodule.
    """
    radii = np.asarray(spec.radii_mm_zyx)
    dz, dy, dx = geometry.offset_mm
    c, s = math.cos(math.radians(spec.rotation_deg)), math.sin(math.radians(spec.rotation_deg))
    weight = np.zeros(geometry.depth_mm.shape, dtype=np.float32)
    for _ in range(spec.nodule_count):
        direction = rng.normal(size=3)
        direction[0] *= 0.35  # favour the equator: nodules show on the slices through the middle
        direction /= np.linalg.norm(direction)
        # Ray radius of the ellipsoid in that (lesion-local) direction, lobulation ignored.
        ray = 1.0 / math.sqrt(float(np.sum((direction / radii) ** 2)))
        size = spec.enhancing_mm * rng.uniform(0.7, 1.3)
        fill = rng.uniform(1.0, 2.2)  # elongation towards the centre
        along = ray - size * 0.9
        local = direction * along
        # Local (z, u, v) -> array (z, y, x): inverse of the in-plane rotation.
        centre = (local[0], local[1] * c - local[2] * s, local[1] * s + local[2] * c)
        radial = np.array([direction[0], direction[1] * c - direction[2] * s, direction[1] * s + direction[2] * c])
        oz, oy, ox = dz - centre[0], dy - centre[1], dx - centre[2]
        t = oz * radial[0] + oy * radial[1] + ox * radial[2]  # along the radius (outward positive)
        across2 = np.maximum(oz**2 + oy**2 + ox**2 - t**2, 0.0)
        stretch = np.where(t < 0.0, fill, 1.0)
        dist = np.sqrt(across2 + (t / stretch) ** 2)
        weight = np.maximum(weight, np.clip((size - dist) / 0.8 + 0.5, 0.0, 1.0))
    # Nodules hug the wall: keep them inside the lesion, not poking through its surface.
    return weight * (geometry.depth_mm >= 0.0)


def _smooth_noise(
    shape: tuple[int, ...],
    scale_mm: float,
    spacing_mm_zyx: tuple[float, float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Gaussian random field with unit standard deviation and correlation length ``scale_mm``."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    dz, dy, dx = spacing_mm_zyx
    sigma_yx = (scale_mm / dy, scale_mm / dx)
    for k in range(shape[0]):
        noise[k] = cv2.GaussianBlur(
            noise[k], (0, 0), sigmaX=sigma_yx[1], sigmaY=sigma_yx[0], borderType=cv2.BORDER_REFLECT
        )
    sigma_z = scale_mm / dz
    if shape[0] > 1 and sigma_z > 0.3:
        radius = max(1, int(math.ceil(2.5 * sigma_z)))
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma_z) ** 2).astype(np.float32)
        taps /= taps.sum()
        flat = noise.reshape(shape[0], -1)
        flat[:] = cv2.sepFilter2D(flat, -1, np.ones(1, np.float32), taps, borderType=cv2.BORDER_REFLECT)
    std = float(noise.std())
    return noise / np.float32(std if std > 0 else 1.0)


def place_lesions(
    liver_mask: np.ndarray,
    spacing_mm_zyx: tuple[float, float, float],
    requests: Sequence[tuple[LesionClass, float]],
    rng: np.random.Generator,
    gap_mm: float = 5.0,
    attempts: int = 400,
) -> list[LesionSpec]:
    """Find a spot inside the liver for each ``(class, diameter_mm)`` request, in order.

    Each lesion, including its blended margin, lies at least 1.5 mm inside the liver and
    ``gap_mm`` away from the lesions placed before it. A request that does not fit after
    ``attempts`` tries is retried at 85 % of its size (twice); then ValueError is raised.
    Seeds for the lesions are drawn from ``rng``, so the same generator state gives the same specs.
    """
    sp = tuple(float(v) for v in spacing_mm_zyx)
    inner = _erode_slices(liver_mask, 1.5, sp)
    occupied = np.zeros(liver_mask.shape, dtype=bool)
    # Candidate centres on a coarse in-plane grid keep the list small for 512 x 512 slices.
    step = max(1, int(round(3.0 / sp[1])))
    candidates = np.argwhere(inner[:, ::step, ::step]) * np.array([1, step, step])
    if len(candidates) == 0:
        raise ValueError("the liver mask is empty: nowhere to place lesions")
    specs = []
    for lesion_class, diameter_mm in requests:
        spec = None
        for shrink in (1.0, 0.85, 0.72):
            spec = _try_place(
                lesion_class, diameter_mm * shrink, candidates, inner, occupied, sp, rng, gap_mm, attempts
            )
            if spec is not None:
                break
        if spec is None:
            raise ValueError(f"could not fit a {diameter_mm:.0f} mm {lesion_class.value} in the liver")
        box, grown = lesion_footprint(spec, liver_mask.shape, sp, spec.margin_mm + gap_mm)
        occupied[box] |= grown
        specs.append(spec)
        logger.debug("placed %s %.0f mm at %s", lesion_class.value, spec.diameter_mm, spec.centre_mm_zyx)
    return specs


def _try_place(
    lesion_class: LesionClass,
    diameter_mm: float,
    candidates: np.ndarray,
    inner: np.ndarray,
    occupied: np.ndarray,
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    gap_mm: float,
    attempts: int,
) -> LesionSpec | None:
    sp = np.asarray(spacing)
    radius = diameter_mm / 2.0
    probes = np.array([[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]) * radius
    for _ in range(attempts):
        centre = np.round(candidates[rng.integers(len(candidates))] * sp, 2)
        # Cheap rejection first: the centre and the six axis points must be free liver.
        idx = np.rint((centre + probes) / sp).astype(int)
        if np.any(idx < 0) or np.any(idx >= inner.shape):
            continue
        if not inner[tuple(idx.T)].all() or occupied[tuple(idx.T)].any():
            continue
        spec = sample_lesion_spec(lesion_class, tuple(centre), diameter_mm, int(rng.integers(0, 2**31 - 1)))
        box, reach = lesion_footprint(spec, inner.shape, spacing, spec.margin_mm)
        if inner[box][reach].all() and not occupied[box][reach].any():
            return spec
    return None


def _erode_slices(mask: np.ndarray, radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """Shrink a mask by ``radius_mm`` in-plane and by one slice where the slices are thin enough."""
    r = max(1, int(round(radius_mm / spacing[1])))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    out = np.zeros_like(mask)
    for k in range(mask.shape[0]):
        if mask[k].any():
            out[k] = cv2.erode(mask[k].astype(np.uint8), kernel).astype(bool)
    if spacing[0] <= 2 * radius_mm + 1.0:
        out[1:] &= mask[:-1]
        out[:-1] &= mask[1:]
    return out
