"""Procedural abdominal CT phantom, in the portal-venous phase unless another contrast phase is asked for.

The phantom is built slice by slice from analytic shapes whose parameters vary smoothly with
depth, so organs are continuous along z without any 3D morphology. Anatomy is laid out in an
anatomical frame (millimetres):

* ``X`` — patient left is positive (image columns grow towards patient left, so the patient's
  right, and the liver, is on the LEFT of the screen);
* ``Y`` — posterior is positive (image rows grow towards the back);
* ``s`` — depth below the apex of the right hemidiaphragm (inferior is positive).

Array axes are ``(z, y, x)`` with z increasing towards the patient's head (slice 0 is the most
inferior one), so array order equals the order of ImagePositionPatient along the slice normal of
an axial series written with orientation ``1\\0\\0\\0\\1\\0``.

The result is noise-free; :func:`liverview.synth.acquisition.simulate_acquisition` adds the
scanner's blur and noise after lesions have been inserted.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from liverview.synth.phases import TABLES, Attenuation, Phase, attenuation
from liverview.progress import Progress, ShouldStop, check_stop

logger = logging.getLogger(__name__)

# Unenhancing tissue in HU (see docs/synth.md for the sources of these values).
AIR_HU = -1000.0
LUNG_HU = -860.0
FAT_HU = -100.0
VISCERAL_FAT_HU = -92.0
SKIN_HU = 30.0
MUSCLE_HU = 52.0
FLUID_HU = 12.0
GAS_HU = -960.0
RENAL_SINUS_HU = -40.0
#: The enhancing organs and vessels per phase are in `liverview.synth.phases`.
PORTAL_VEIN_HU = TABLES[Phase.PORTAL_VENOUS].portal_vein
CANCELLOUS_BONE_HU = 240.0
CORTICAL_BONE_HU = 780.0
POSTERIOR_ELEMENT_HU = 520.0
RIB_MARROW_HU = 280.0
COSTAL_CARTILAGE_HU = 140.0
DISC_HU = 90.0
THECAL_SAC_HU = 20.0
TABLE_HU = 250.0

_LOOP_CONTENT_HU = {"gas": GAS_HU, "fluid": 20.0, "collapsed": 45.0}

#: Depth of the right hemidiaphragm apex below the top edge of the volume: the first slices show
#: lung bases and the inferior heart above the liver dome.
APEX_BELOW_TOP_MM = 9.0

MASK_NAMES = (
    "body",
    "liver",
    "hepatic_vessels",
    "spleen",
    "kidneys",
    "aorta",
    "ivc",
    "bone",
    "lungs",
    "stomach",
    "bowel",
)


@dataclass
class Phantom:
    """A noise-free synthetic CT volume and its organ masks.

    ``hu`` is float32 ``(z, y, x)`` in Hounsfield units, z increasing towards the head.
    ``masks`` maps each name in :data:`MASK_NAMES` to a boolean ``(z, y, x)`` array; "liver"
    includes the hepatic vessels inside it (as in LiTS-style liver segmentations).
    ``liver_hu`` is the parenchymal attenuation this phantom drew (lesion contrast refers to it).
    """

    hu: np.ndarray
    masks: dict[str, np.ndarray]
    spacing_mm_zyx: tuple[float, float, float]
    liver_hu: float
    #: Portal-venous blood attenuation (main portal vein); the other vessels scale with it.
    blood_pool_hu: float = PORTAL_VEIN_HU

    @property
    def parenchyma(self) -> np.ndarray:
        """The liver without the hepatic vessels inside it."""
        return self.masks["liver"] & ~self.masks["hepatic_vessels"]


@dataclass(frozen=True)
class _Loop:
    """One bowel loop: a tube whose centre wanders smoothly with depth."""

    x_mm: float
    y_mm: float
    wander_mm: float
    wander_phase: float
    s_top_mm: float
    s_bottom_mm: float
    radius_mm: float
    aspect: float  # minor/major axis ratio of the cross-section
    angle_deg: float
    content: str  # "gas", "fluid", "collapsed" or "stool"
    gas_level: float  # fraction of the lumen (from the front) filled with gas above fluid


@dataclass(frozen=True)
class _Anatomy:
    """Per-study random variation of the anatomy, drawn once from the caller's generator."""

    body_a_mm: float
    body_b_mm: float
    liver_hu: float
    liver_radius_mm: float
    liver_tip_s_mm: float
    lobe_amplitude: np.ndarray  # (4,) for harmonics k = 2..5
    lobe_phase: np.ndarray
    lobe_rate: np.ndarray  # how fast each harmonic's phase turns with depth (rad/mm)
    left_lobe_mm: float
    spleen_hu: float
    vertebra_phase_mm: float
    rib_phase_mm: float
    loops: tuple[_Loop, ...]
    #: Factor on every blood-pool attenuation (vessels, heart chambers); 1 for the demo.
    blood_scale: float = 1.0
    #: The contrast phase painted.
    phase: Phase = Phase.PORTAL_VENOUS

    @property
    def att(self) -> Attenuation:
        return attenuation(self.phase, self.liver_hu, self.spleen_hu, self.blood_scale)


def make_abdomen_phantom(
    shape_zyx: tuple[int, int, int],
    spacing_mm_zyx: tuple[float, float, float],
    rng: np.random.Generator,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    centre_xy_mm: tuple[float, float] = (0.0, 0.0),
    top_s_mm: float | None = None,
    liver_hu: float | None = None,
    blood_pool_hu: float | None = None,
    phase: Phase | str = Phase.PORTAL_VENOUS,
) -> Phantom:
    """Build a noise-free portal-venous abdominal CT phantom covering the liver.

    The anatomy has a fixed physical size (an adult abdomen about 30 x 22 cm); the volume is
    centred in-plane on it and its top edge lies :data:`APEX_BELOW_TOP_MM` above the right
    hemidiaphragm, so a 180 mm tall volume runs from the lung bases to below the liver tip.
    ``rng`` drives all anatomical variation (shape of the liver, vessel trees, bowel loops):
    the same generator state gives the same phantom. ``progress`` and ``should_stop`` are
    consulted once per slice (see :mod:`liverview.progress`).

    A smaller field of view (the lesion simulator's: a slab around the liver) is chosen with
    ``centre_xy_mm`` — the anatomical (X, Y) at the centre of each slice, X towards the patient's
    left, Y posterior, (0, 0) = the middle of the abdomen — and ``top_s_mm``, the depth of the
    top slice below the right hemidiaphragm's apex (default ``-APEX_BELOW_TOP_MM``).
    ``liver_hu`` replaces the drawn parenchymal attenuation and ``blood_pool_hu`` the portal
    vein's (175 HU; every other vessel and the heart's blood scale with it), to vary the
    enhancement from patient to patient. ``phase`` paints the enhancing structures as in that
    contrast phase (`liverview.synth.phases`; ``liver_hu`` and ``blood_pool_hu`` stay the
    portal-venous values they are derived from). None of them changes a random draw: the same
    generator gives the same anatomy in every phase, and with the defaults the phantom is exactly the
    one earlier versions built.
    """
    nz, ny, nx = shape_zyx
    dz, dy, dx = (float(v) for v in spacing_mm_zyx)
    anatomy = _draw_anatomy(rng)
    if liver_hu is not None:
        anatomy = dataclasses.replace(anatomy, liver_hu=float(liver_hu))
    if blood_pool_hu is not None:
        anatomy = dataclasses.replace(anatomy, blood_scale=float(blood_pool_hu) / PORTAL_VEIN_HU)
    anatomy = dataclasses.replace(anatomy, phase=Phase(phase))
    grid = _SliceGrid(ny, nx, dy, dx, anatomy, rng, centre_xy_mm)

    hu = np.empty(shape_zyx, dtype=np.float32)
    masks = {name: np.zeros(shape_zyx, dtype=bool) for name in MASK_NAMES}
    if top_s_mm is None:
        z_apex = (nz - 1) * dz - APEX_BELOW_TOP_MM
    else:
        z_apex = (nz - 1) * dz + float(top_s_mm)
    for k in range(nz):
        check_stop(should_stop)
        if progress is not None:
            progress(k / nz, "Building the synthetic abdomen")
        s = z_apex - k * dz
        slice_masks = _paint_slice(hu[k], s, grid, anatomy)
        for name, m in slice_masks.items():
            masks[name][k] = m

    _paint_hepatic_vessels(hu, masks, (dz, dy, dx), z_apex, grid, rng, anatomy.att)
    logger.debug("phantom %s built, liver %.0f ml", shape_zyx, masks["liver"].sum() * dz * dy * dx / 1000)
    return Phantom(
        hu=hu,
        masks=masks,
        spacing_mm_zyx=(dz, dy, dx),
        liver_hu=anatomy.att.liver,
        blood_pool_hu=anatomy.att.portal_vein,
    )


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    # Small-bowel and colon loops fill the anterior abdomen below the stomach; the hepatic
    # flexure of the colon, full of stool, sits against the liver tip.
    loops = [_Loop(-92.0, -30.0, 6.0, float(rng.uniform(0, 2 * math.pi)), 115.0, 230.0, 22.0, 0.8, 30.0, "stool", 0.0)]
    for _ in range(22):
        content = str(rng.choice(["fluid", "collapsed", "gas", "stool"], p=[0.45, 0.3, 0.1, 0.15]))
        s_top = float(rng.uniform(80.0, 150.0))
        loops.append(
            _Loop(
                x_mm=float(rng.uniform(-55.0, 95.0)),
                y_mm=float(rng.uniform(-85.0, 15.0)),
                wander_mm=float(rng.uniform(4.0, 14.0)),
                wander_phase=float(rng.uniform(0, 2 * math.pi)),
                s_top_mm=s_top,
                s_bottom_mm=s_top + float(rng.uniform(30.0, 80.0)),
                radius_mm=float(rng.uniform(6.0, 9.0) if content == "collapsed" else rng.uniform(9.0, 16.0)),
                aspect=float(rng.uniform(0.55, 1.0)),
                angle_deg=float(rng.uniform(0.0, 180.0)),
                content=content,
                gas_level=float(rng.uniform(0.15, 0.35)) if content == "fluid" and rng.random() < 0.4 else 0.0,
            )
        )
    return _Anatomy(
        body_a_mm=150.0 * rng.uniform(0.96, 1.04),
        body_b_mm=108.0 * rng.uniform(0.96, 1.04),
        liver_hu=float(rng.uniform(106.0, 114.0)),
        liver_radius_mm=float(rng.uniform(90.0, 100.0)),
        liver_tip_s_mm=float(rng.uniform(150.0, 160.0)),
        lobe_amplitude=rng.uniform(0.015, 0.045, size=4) / np.sqrt(np.arange(2, 6)),
        lobe_phase=rng.uniform(0, 2 * math.pi, size=4),
        lobe_rate=rng.uniform(-0.015, 0.015, size=4),
        left_lobe_mm=float(rng.uniform(70.0, 90.0)),
        spleen_hu=float(rng.uniform(112.0, 126.0)),
        vertebra_phase_mm=float(rng.uniform(0, 34.0)),
        rib_phase_mm=float(rng.uniform(0, 30.0)),
        loops=tuple(loops),
    )


class _SliceGrid:
    """In-plane coordinates and the parts of the anatomy that do not change with depth."""

    def __init__(
        self,
        ny: int,
        nx: int,
        dy: float,
        dx: float,
        anatomy: _Anatomy,
        rng: np.random.Generator,
        centre_xy_mm: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self.shape = (ny, nx)
        self.dy, self.dx = dy, dx
        cx_mm, cy_mm = (float(v) for v in centre_xy_mm)
        self.centre_y_mm = (ny - 1) / 2 * dy - cy_mm
        self.centre_x_mm = (nx - 1) / 2 * dx - cx_mm
        self.X = ((np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * dx)[None, :]
        self.Y = ((np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * dy)[:, None]
        if cx_mm != 0.0 or cy_mm != 0.0:
            self.X = self.X + np.float32(cx_mm)
            self.Y = self.Y + np.float32(cy_mm)
        X, Y = self.X, self.Y

        a, b, cy = anatomy.body_a_mm, anatomy.body_b_mm, -3.0
        self.body = _body_mask(X, Y, a, b, cy)
        self.posterior_skin_y_mm = cy + b
        depth = _body_depth_mm(self.body, X, Y, a, b, cy, dx, dy)
        r = np.hypot(X, Y - cy) + 1e-3
        cos_anterior = -(Y - cy) / r  # 1 at the front midline, -1 at the back
        self.theta_anterior = np.arctan2(X, -(Y - cy))
        fat_mm = 11.0 + 10.0 * np.clip(cos_anterior, 0, None) ** 1.5
        self.skin = self.body & (depth < 2.0)
        self.wall = self.body & (depth >= fat_mm) & (depth < fat_mm + 10.0)
        self.rib_band = self.body & (depth >= fat_mm + 1.5) & (depth < fat_mm + 9.5)

        # Vertebral column (body, canal, arch) and paraspinal muscles: constant in-plane.
        self.vertebra_q = _ellipse_q(X, Y, 0.0, 40.0, 22.0, 17.0)
        self.canal_r = np.hypot(X, Y - 67.0)
        self.spinous_q = _ellipse_q(X, Y, 0.0, 89.0, 4.5, 13.0)
        self.transverse = (_ellipse_q(X, Y, 32.0, 64.0, 14.0, 4.5, -12.0) <= 1) | (
            _ellipse_q(X, Y, -32.0, 64.0, 14.0, 4.5, 12.0) <= 1
        )
        self.paraspinal = self.body & (
            (_ellipse_q(X, Y, 37.0, 78.0, 30.0, 21.0, 8.0) <= 1)
            | (_ellipse_q(X, Y, -37.0, 78.0, 30.0, 21.0, -8.0) <= 1)
        )
        self.cavity = (
            self.body & (depth >= fat_mm + 10.0) & ~self.paraspinal & (self.vertebra_q > 1.0) & (self.canal_r > 17.0)
        )
        # Hemidiaphragms as two paraboloid domes; lung lies above the higher of the two, so the
        # posterior and lateral recesses reach lower than the apex.
        posterior_recess = 60.0 * np.clip((Y - 10.0) / 90.0, 0, None) ** 2
        right_dome = 110.0 * (((X + 55.0) / 110.0) ** 2 + ((Y + 12.0) / 100.0) ** 2)
        left_dome = 14.0 + 110.0 * (((X - 62.0) / 100.0) ** 2 + ((Y + 8.0) / 100.0) ** 2)
        # The heart rests on the central tendon, a little below the right dome.
        central_tendon = 10.0 + 60.0 * (((X - 15.0) / 60.0) ** 2 + ((Y + 35.0) / 50.0) ** 2)
        self.diaphragm_s = np.minimum(np.minimum(right_dome, left_dome), central_tendon)
        self.diaphragm_s += posterior_recess
        self.heart_q = _ellipse_q(X, Y, 24.0, -42.0, 68.0, 48.0, 25.0)

        # Stool: soft material with gas bubbles, from thresholded smooth noise (~2 mm blobs).
        blobs = cv2.GaussianBlur(rng.standard_normal((ny, nx), dtype=np.float32), (0, 0), 2.0 / dx, 2.0 / dy)
        blobs /= blobs.std()
        self.stool = np.where(blobs > 1.1, GAS_HU, 10.0 + 25.0 * blobs).astype(np.float32)

        table_y = self.posterior_skin_y_mm + 14.0 + X**2 / 1800.0
        self.table = ((np.abs(Y - table_y) < 1.2) | (np.abs(Y - table_y - 24.0) < 1.2)) & (np.abs(X) < 190.0)

    def to_array_mm(self, x_mm: float, y_mm: float, s_mm: float, z_apex: float) -> np.ndarray:
        """Anatomical (X, Y, s) -> array-frame (z, y, x) millimetres from voxel (0, 0, 0)."""
        return np.array([z_apex - s_mm, y_mm + self.centre_y_mm, x_mm + self.centre_x_mm])


def _body_mask(X: np.ndarray, Y: np.ndarray, a: float, b: float, cy: float) -> np.ndarray:
    # The back is flatter than the belly: a higher superellipse exponent posteriorly.
    p = np.where(Y > cy, 2.7, 2.0).astype(np.float32)
    qb = (np.abs(X / a) ** p + np.abs((Y - cy) / b) ** p) ** (1.0 / p)
    return qb <= 1.0


def _body_depth_mm(
    body: np.ndarray, X: np.ndarray, Y: np.ndarray, a: float, b: float, cy: float, dx: float, dy: float
) -> np.ndarray:
    """Distance from each pixel to the skin (mm), right even when the field of view cuts the body.

    When the body reaches the edge of the slice, the distance transform runs on a canvas with the
    same pixel grid that holds the whole body, and the slice's part is cut out of it.
    """
    pixel_mm = math.sqrt(dx * dy)
    ny, nx = body.shape
    edge_hit = body[0].any() or body[-1].any() or body[:, 0].any() or body[:, -1].any()
    if not edge_hit:
        return cv2.distanceTransform(body.astype(np.uint8), cv2.DIST_L2, 5) * pixel_mm
    x0, y0 = float(X[0, 0]), float(Y[0, 0])
    # Canvas pixels before / after the slice on each side, enough to hold the body plus a margin.
    before_x = max(0, int(math.ceil((x0 - (-a - 5.0)) / dx)))
    after_x = max(0, int(math.ceil((a + 5.0 - (x0 + (nx - 1) * dx)) / dx)))
    before_y = max(0, int(math.ceil((y0 - (cy - b - 5.0)) / dy)))
    after_y = max(0, int(math.ceil((cy + b + 5.0 - (y0 + (ny - 1) * dy)) / dy)))
    cX = (x0 + (np.arange(-before_x, nx + after_x, dtype=np.float32)) * dx)[None, :]
    cY = (y0 + (np.arange(-before_y, ny + after_y, dtype=np.float32)) * dy)[:, None]
    canvas = _body_mask(cX, cY, a, b, cy)
    depth = cv2.distanceTransform(canvas.astype(np.uint8), cv2.DIST_L2, 5) * pixel_mm
    return depth[before_y : before_y + ny, before_x : before_x + nx]


def _ellipse_q(
    X: np.ndarray,
    Y: np.ndarray,
    cx: float,
    cy: float,
    a: float,
    b: float,
    angle_deg: float = 0.0,
) -> np.ndarray:
    """Normalised elliptical radius (<= 1 inside) of an ellipse with semi-axes a (x), b (y)."""
    a, b = max(a, 1e-3), max(b, 1e-3)
    if angle_deg == 0.0:
        return np.sqrt(((X - cx) / a) ** 2 + ((Y - cy) / b) ** 2)
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    u = (X - cx) * c + (Y - cy) * s
    v = -(X - cx) * s + (Y - cy) * c
    return np.sqrt((u / a) ** 2 + (v / b) ** 2)


def _profile(s: float, top: float, bottom: float) -> float:
    """Ellipsoidal size factor: 0 outside [top, bottom], 1 at the middle."""
    if not top < s < bottom:
        return 0.0
    u = (2 * s - top - bottom) / (bottom - top)
    return math.sqrt(1.0 - u * u)


def _smoothstep(s: float, a: float, b: float) -> float:
    t = min(max((s - a) / (b - a), 0.0), 1.0)
    return t * t * (3 - 2 * t)


def _smooth_union(f1: np.ndarray, f2: np.ndarray, k_mm: float) -> np.ndarray:
    """Union of two signed-distance-like fields with a rounded crease instead of a notch."""
    h = np.clip(k_mm - np.abs(f1 - f2), 0, None) / k_mm
    return np.minimum(f1, f2) - h * h * k_mm * 0.25


def _dilate(mask: np.ndarray, radius_mm: float, pixel_mm: float) -> np.ndarray:
    r = max(1, int(round(radius_mm / pixel_mm)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def _rim(mask: np.ndarray, thickness_mm: float, pixel_mm: float) -> np.ndarray:
    """The outer ``thickness_mm`` of a mask (cortical bone, organ walls)."""
    r = max(1, int(round(thickness_mm / pixel_mm)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return mask & ~cv2.erode(mask.astype(np.uint8), kernel).astype(bool)


def _paint_slice(out: np.ndarray, s: float, g: _SliceGrid, an: _Anatomy) -> dict[str, np.ndarray]:
    """Fill one axial slice at depth ``s`` (mm below the right dome) and return its masks."""
    X, Y = g.X, g.Y
    pixel_mm = math.sqrt(g.dx * g.dy)
    out[:] = AIR_HU
    out[g.table] = TABLE_HU
    out[g.body] = FAT_HU
    out[g.skin] = SKIN_HU
    out[g.wall] = MUSCLE_HU
    out[g.cavity] = VISCERAL_FAT_HU

    lungs = g.cavity & (s < g.diaphragm_s)
    below = g.cavity & (s >= g.diaphragm_s + 5.0)
    out[g.cavity & ~lungs & ~below] = MUSCLE_HU  # the diaphragm itself
    out[lungs] = LUNG_HU
    # The heart sits on the central tendon; lower down, lung (lingula) fills the slope of the dome.
    heart = lungs & (g.heart_q <= 1.0) & (s < 14.0 + 14.0 * g.heart_q)
    lungs &= ~heart
    att = an.att
    out[heart] = att.myocardium
    out[heart & (g.heart_q <= 0.78)] = att.cardiac_blood

    # Great vessels (in front of the spine) and the retroperitoneal organs.
    aorta = _ellipse_q(X, Y, 13.0, 13.0, 11.5, 11.0) <= 1.0
    t_ivc = _smoothstep(s, 0.0, 60.0)
    ivc = g.body & (_ellipse_q(X, Y, -18.0 - 6.0 * t_ivc, -2.0 + 12.0 * t_ivc, 13.0, 10.0) <= 1.0)
    ivc &= ~lungs

    p = _profile(s, 20.0, 132.0)
    spleen = below & (_ellipse_q(X, Y, 84.0 + 6 * p, 48.0, 27.0 * p, 60.0 * p, 38.0) <= 1.0)
    kidneys = np.zeros(g.shape, dtype=bool)
    kidney_layers = []
    for side, s_top in ((-1.0, 98.0), (1.0, 82.0)):
        p = _profile(s, s_top, s_top + 115.0)
        if p == 0.0:
            continue
        cx, cy = side * 70.0, 48.0
        a, b = 24.0 * p**0.5, 33.0 * p**0.5
        q = _ellipse_q(X, Y, cx, cy, a, b, -side * 30.0)
        kidney = below & (q <= 1.0)
        # The renal sinus (hilum) exists only through the middle of the kidney, not at the poles.
        hilum = min(max((p - 0.6) / 0.4, 0.0), 1.0)
        sinus = _ellipse_q(X, Y, cx - side * 0.55 * a, cy - 0.35 * b, 0.45 * a * hilum, 0.35 * b * hilum) <= 1.0
        kidney_layers.append((kidney, q, sinus & kidney, min(a, b)))
        kidneys |= kidney

    p = _profile(s, -5.0, 125.0)
    st_cx, st_cy, st_a, st_b = 60.0 + 8.0 * s / 100.0, -14.0 + 10.0 * s / 100.0, 46.0 * p, 38.0 * p
    stomach_q = _ellipse_q(X, Y, st_cx, st_cy, st_a, st_b, 20.0)
    stomach = below & (stomach_q <= 1.0) & ~spleen

    p = _profile(s, 98.0, 140.0)
    pancreas = np.zeros(g.shape, dtype=bool)
    if p > 0.0:
        pts = ((-28.0, -8.0), (12.0, -4.0), (50.0, 12.0), (78.0, 30.0))
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            pancreas |= _segment_distance(X, Y, x0, y0, x1, y1) <= 10.0 * p
        pancreas &= below

    organs = spleen | kidneys | stomach | pancreas | aorta | ivc
    bowel = np.zeros(g.shape, dtype=bool)
    bowel_out = np.full(g.shape, np.nan, dtype=np.float32)
    for loop in an.loops:
        p = _profile(s, loop.s_top_mm, loop.s_bottom_mm)
        if p == 0.0:
            continue
        r = loop.radius_mm * min(1.0, 2.5 * p)
        cx = loop.x_mm + loop.wander_mm * math.sin(s / 23.0 + loop.wander_phase)
        cy = loop.y_mm + loop.wander_mm * math.cos(s / 31.0 + loop.wander_phase)
        q = _ellipse_q(X, Y, cx, cy, r, r * loop.aspect, loop.angle_deg + 0.8 * s)
        lumen = q <= 1.0
        if not lumen.any():
            continue
        inner = q <= 1.0 - 2.5 / (r * loop.aspect)
        if loop.content == "stool":
            value = g.stool.copy()
        else:
            value = np.full(g.shape, _LOOP_CONTENT_HU[loop.content], dtype=np.float32)
        value[~inner] = att.bowel_wall
        if loop.gas_level > 0.0:
            # Supine patient: gas floats to the front (smaller Y) above a flat fluid level.
            value[inner & (Y < cy - r * loop.aspect * (1.0 - 2.0 * loop.gas_level))] = GAS_HU
        bowel_out[lumen] = value[lumen]
        bowel |= lumen

    # Liver: a lobulated right lobe (polar radius with slowly turning harmonics) smoothly
    # joined to a left lobe that crosses the midline in front of the stomach.
    liver = np.zeros(g.shape, dtype=bool)
    tip = an.liver_tip_s_mm
    flat = 50.0
    taper = max(s - flat, 0.0) / (tip - flat)
    if taper < 1.0:
        radius = an.liver_radius_mm * math.sqrt(1.0 - taper * taper)
        depth = min(max(s / 150.0, 0.0), 1.0)
        cx, cy = -60.0 - 22.0 * depth, -4.0 - 24.0 * depth**1.5
        theta = np.arctan2(Y - cy, X - cx)
        lob = np.zeros_like(theta)
        for i, k in enumerate(range(2, 6)):
            lob += an.lobe_amplitude[i] * np.cos(k * theta + an.lobe_phase[i] + an.lobe_rate[i] * s)
        f_right = np.hypot(X - cx, Y - cy) - radius * (1.0 + lob)
        w = _profile(s, 5.0, 125.0)
        if w > 0.0:
            la, lb = an.left_lobe_mm * w**0.7, 30.0 * w**0.4
            q = _ellipse_q(X, Y, 12.0 + 15.0 * (s - 60.0) / 60.0, -56.0, la, lb, -14.0)
            f = _smooth_union(f_right, (q - 1.0) * lb, 18.0)
        else:
            f = f_right
        retroperitoneum = _ellipse_q(X, Y, 4.0, 40.0, 44.0, 36.0) <= 1.0
        keep_out = _dilate(spleen | kidneys | stomach | pancreas | aorta, 3.5, pixel_mm)
        liver = below & (f <= 0.0) & ~keep_out & ~retroperitoneum & ~ivc

    # Bowel yields to the solid organs, keeping a thin fat plane against the liver.
    bowel &= ~organs & ~_dilate(liver, 2.5, pixel_mm)
    out[bowel] = bowel_out[bowel]
    out[pancreas] = att.pancreas
    out[stomach] = FLUID_HU
    out[stomach & (stomach_q > 1.0 - 5.0 / max(min(st_a, st_b), 5.0))] = att.bowel_wall
    out[stomach & (stomach_q <= 0.9) & (Y < st_cy - 0.35 * st_b)] = GAS_HU
    out[spleen] = att.spleen
    for kidney, q, sinus, minor in kidney_layers:
        out[kidney] = att.kidney_cortex
        out[kidney & (q < 1.0 - 6.0 / max(minor, 6.5))] = att.kidney_medulla
        out[sinus] = RENAL_SINUS_HU
    out[aorta] = att.aorta
    out[ivc] = att.ivc
    out[liver] = att.liver

    # Spine, back muscles and psoas overwrite whatever the soft shapes reached.
    out[g.paraspinal] = MUSCLE_HU
    r_psoas = 16.0 * _smoothstep(s, 95.0, 175.0)
    if r_psoas > 0.5:
        psoas = (_ellipse_q(X, Y, 36.0, 36.0, r_psoas, 1.15 * r_psoas) <= 1) | (
            _ellipse_q(X, Y, -36.0, 36.0, r_psoas, 1.15 * r_psoas) <= 1
        )
        out[psoas & g.cavity & ~kidneys] = MUSCLE_HU
    bone = np.zeros(g.shape, dtype=bool)
    level = (s + an.vertebra_phase_mm) % 34.0
    vertebral_body = g.vertebra_q <= 1.0
    if level < 8.0:
        out[vertebral_body] = DISC_HU
    else:
        out[vertebral_body] = CANCELLOUS_BONE_HU
        out[_rim(vertebral_body, 2.0, pixel_mm)] = CORTICAL_BONE_HU
        bone |= vertebral_body
    arch = (g.canal_r <= 16.0) & (Y > 60.0)
    # Lumbar transverse processes show only on the slices through the middle of each vertebra.
    arch |= (g.spinous_q <= 1.0) | (g.transverse & (s > 105.0) & (12.0 <= level < 24.0))
    out[arch] = POSTERIOR_ELEMENT_HU
    out[g.canal_r <= 9.5] = THECAL_SAC_HU
    bone |= arch & (g.canal_r > 9.5)

    # Ribs: oblique hoops that descend anteriorly, so each slice cuts short arcs of several
    # ribs; the cage ends at the costal margin, which is lowest at the back.
    from_back = np.pi - np.abs(g.theta_anterior)  # 0 at the spine, pi at the sternum
    rib_height = 130.0 * from_back / np.pi
    costal_margin = 150.0 - 110.0 * from_back / np.pi
    band = ((s - rib_height + an.rib_phase_mm) % 32.0) < 8.0
    # Next to the spine the ribs run deep to the back muscles, into the transverse processes.
    ribs = g.rib_band & band & (s < costal_margin) & (np.abs(g.theta_anterior) > 0.35) & (np.abs(X) > 60.0)
    cartilage = ribs & (np.abs(g.theta_anterior) < 1.0)
    bony_ribs = ribs & ~cartilage
    out[cartilage] = COSTAL_CARTILAGE_HU
    out[bony_ribs] = RIB_MARROW_HU
    out[_rim(bony_ribs, 1.2, pixel_mm)] = CORTICAL_BONE_HU
    bone |= bony_ribs

    return {
        "body": g.body,
        "liver": liver,
        "spleen": spleen,
        "kidneys": kidneys,
        "aorta": aorta,
        "ivc": ivc,
        "bone": bone,
        "lungs": lungs,
        "stomach": stomach,
        "bowel": bowel,
    }


def _segment_distance(X: np.ndarray, Y: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    vx, vy = x1 - x0, y1 - y0
    t = np.clip(((X - x0) * vx + (Y - y0) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    return np.hypot(X - x0 - t * vx, Y - y0 - t * vy)


# Vessel trees: roots and initial directions in the anatomical frame (X, Y, s).
_HEPATIC_VEIN_ROOTS = (
    ((-33.0, 4.0, 24.0), (-110.0, 25.0, 75.0)),  # right hepatic vein
    ((-26.0, -11.0, 22.0), (-60.0, -70.0, 85.0)),  # middle hepatic vein
    ((-12.0, -12.0, 20.0), (35.0, -62.0, 50.0)),  # left hepatic vein
)
_PORTAL_HILUM = (-30.0, -14.0, 95.0)
_PORTAL_CONFLUENCE = (-6.0, 4.0, 128.0)
_PORTAL_BRANCH_TARGETS = ((-95.0, 0.0, 70.0), (-85.0, -30.0, 130.0), (18.0, -48.0, 70.0))


def _paint_hepatic_vessels(
    hu: np.ndarray,
    masks: dict[str, np.ndarray],
    spacing: tuple[float, float, float],
    z_apex: float,
    g: _SliceGrid,
    rng: np.random.Generator,
    att: Attenuation,
) -> None:
    """Grow branching portal and hepatic venous trees inside the liver and paint them."""
    liver = masks["liver"]
    if not liver.any():
        return
    vessels = masks["hepatic_vessels"]
    for root, target in _HEPATIC_VEIN_ROOTS:
        p0 = g.to_array_mm(*root, z_apex)
        p1 = g.to_array_mm(*target, z_apex)
        for seg in _grow_tree(p0, p1 - p0, 5.5, 26.0, liver, spacing, rng):
            _paint_capsule(hu, vessels, seg, att.hepatic_vein, spacing, liver)
    hilum = g.to_array_mm(*_PORTAL_HILUM, z_apex)
    # The main portal vein runs outside the liver from the confluence to the hilum.
    trunk = (g.to_array_mm(*_PORTAL_CONFLUENCE, z_apex), hilum, 7.0)
    _paint_capsule(hu, vessels, trunk, att.portal_vein, spacing, masks["body"] & ~masks["bone"])
    for target in _PORTAL_BRANCH_TARGETS:
        p1 = g.to_array_mm(*target, z_apex)
        for seg in _grow_tree(hilum, p1 - hilum, 6.0, 24.0, liver, spacing, rng):
            _paint_capsule(hu, vessels, seg, att.portal_vein, spacing, liver)
    vessels &= liver


Segment = tuple[np.ndarray, np.ndarray, float]


def _grow_tree(
    root: np.ndarray,
    direction: np.ndarray,
    radius_mm: float,
    length_mm: float,
    liver: np.ndarray,
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
) -> list[Segment]:
    """Binary branching tree from ``root``; branches that would leave the liver are cut short."""
    segments: list[Segment] = []
    bias = direction / np.linalg.norm(direction)
    stack = [(root, bias, radius_mm, length_mm, 0)]
    while stack:
        p, d, r, length, depth = stack.pop()
        if r < 1.1 or depth > 6:
            continue
        end = None
        for scale in (1.0, 0.55):
            candidate = p + d * length * scale
            if _inside(liver, candidate, spacing) or depth == 0:
                end = candidate
                break
        if end is None:
            continue
        segments.append((p, end, r))
        for side in (-1.0, 1.0):
            angle = math.radians(rng.uniform(18.0, 38.0)) * side
            child = _rotate_towards_random(d, angle, rng)
            child = child + 0.25 * bias * (depth < 2)
            child /= np.linalg.norm(child)
            stack.append((end, child, r * rng.uniform(0.68, 0.8), length * rng.uniform(0.7, 0.85), depth + 1))
    return segments


def _inside(mask: np.ndarray, point_mm: np.ndarray, spacing: tuple[float, float, float]) -> bool:
    idx = np.rint(point_mm / np.asarray(spacing)).astype(int)
    if np.any(idx < 0) or np.any(idx >= mask.shape):
        return False
    return bool(mask[tuple(idx)])


def _rotate_towards_random(d: np.ndarray, angle: float, rng: np.random.Generator) -> np.ndarray:
    """Turn unit vector ``d`` by ``angle`` about a random axis perpendicular to it."""
    axis = np.cross(d, rng.normal(size=3))
    axis /= np.linalg.norm(axis) + 1e-9
    perpendicular = np.cross(axis, d)
    return d * math.cos(angle) + perpendicular * math.sin(angle)


def _paint_capsule(
    hu: np.ndarray,
    mask_out: np.ndarray,
    segment: Segment,
    value_hu: float,
    spacing: tuple[float, float, float],
    allowed: np.ndarray,
) -> None:
    """Blend a round-ended tube into ``hu`` with a soft (partial-volume) edge."""
    p0, p1, r = segment
    sp = np.asarray(spacing)
    lo = np.maximum(np.floor((np.minimum(p0, p1) - r - 1.0) / sp).astype(int), 0)
    hi = np.minimum(np.ceil((np.maximum(p0, p1) + r + 1.0) / sp).astype(int) + 1, hu.shape)
    if np.any(hi <= lo):
        return
    zz = (np.arange(lo[0], hi[0]) * sp[0])[:, None, None]
    yy = (np.arange(lo[1], hi[1]) * sp[1])[None, :, None]
    xx = (np.arange(lo[2], hi[2]) * sp[2])[None, None, :]
    v = p1 - p0
    vv = float(v @ v) or 1e-9
    t = np.clip(((zz - p0[0]) * v[0] + (yy - p0[1]) * v[1] + (xx - p0[2]) * v[2]) / vv, 0.0, 1.0)
    dist = np.sqrt((zz - p0[0] - t * v[0]) ** 2 + (yy - p0[1] - t * v[1]) ** 2 + (xx - p0[2] - t * v[2]) ** 2)
    soft = max(float(sp[1]), 0.7)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    alpha = np.clip((r - dist) / soft + 0.5, 0.0, 1.0) * allowed[box]
    region = hu[box]
    region += alpha.astype(np.float32) * (value_hu - region)
    mask_out[box] |= alpha >= 0.5
