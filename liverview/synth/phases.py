"""Attenuation of the phantom's enhancing structures in each contrast phase.

The portal-venous column is the phantom's original table (docs/synth.md). The other phases come
from the literature collected in docs/contrast-phase-literature.md; entries marked *assumed* had no
published number behind them:

| structure (HU) | non-contrast | late arterial | portal-venous | delayed (3-5 min) |
|---|---|---|---|---|
| aorta | 40 [B1, B2] | 320 [R1: 290-360] | 170 | 125 *assumed* |
| portal vein | 40 (same blood [B1]) | 145 [R1: 145 +/- 20] | 175 | 125 *assumed* |
| IVC | 38 [B1] | 80 *assumed* (renal return only) | 150 | 120 *assumed* |
| hepatic veins | 40 | 45 *assumed* (not yet opacified) | 162 | 122 *assumed* |
| heart blood | 40 | 300 *assumed* (near the aorta) | 165 | 125 *assumed* |
| liver | baseline = portal-venous - 58 [G1: +59-63] | baseline + 25 [R1: +20-30] | drawn | baseline + 40 *assumed* |
| spleen | portal-venous - 70 *assumed* | non-contrast + 100 [G1: +97-108] | drawn | non-contrast + 55 *assumed* |
| renal cortex / medulla | 32 / 30 *assumed* | 200 / 80 *assumed* (corticomedullary) | 165 / 105 | 145 / 150 *assumed* (nephrographic) |
| pancreas | 45 *assumed* | 130 *assumed* (pancreatic phase) | 100 | 80 *assumed* |

The delayed phase was found only as a description ("uniform enhancement between the blood vessels
and the surrounding liver"): its numbers follow that description and are labelled as assumed in the
docs. Every value keeps the patient's variation: blood values are multiplied by the patient's
blood-pool factor (as the portal-venous phantom always did), and the liver and spleen keep their
offsets.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum

import numpy as np

from liverview.annotations.labels import LesionClass
from liverview.synth.lesions import LesionSpec

#: Liver enhancement in the portal-venous phase above its unenhanced value [G1: 59-63 HU].
LIVER_PORTAL_ENHANCEMENT_HU = 58.0


class Phase(str, Enum):
    NON_CONTRAST = "non_contrast"
    ARTERIAL = "arterial"
    PORTAL_VENOUS = "portal_venous"
    DELAYED = "delayed"


@dataclass(frozen=True)
class Enhancing:
    """The attenuation (HU) of the phantom's enhancing vessels and organs, liver and spleen aside."""

    aorta: float
    portal_vein: float
    ivc: float
    hepatic_vein: float
    cardiac_blood: float
    myocardium: float
    kidney_cortex: float
    kidney_medulla: float
    pancreas: float
    bowel_wall: float


#: The blood-pool members of `Enhancing`: a patient's blood-pool factor multiplies them.
BLOOD = ("aorta", "portal_vein", "ivc", "hepatic_vein", "cardiac_blood")

TABLES: dict[Phase, Enhancing] = {
    Phase.NON_CONTRAST: Enhancing(40.0, 40.0, 38.0, 40.0, 40.0, 45.0, 32.0, 30.0, 45.0, 40.0),
    Phase.ARTERIAL: Enhancing(320.0, 145.0, 80.0, 45.0, 300.0, 120.0, 200.0, 80.0, 130.0, 100.0),
    Phase.PORTAL_VENOUS: Enhancing(170.0, 175.0, 150.0, 162.0, 165.0, 100.0, 165.0, 105.0, 100.0, 70.0),
    Phase.DELAYED: Enhancing(125.0, 125.0, 120.0, 122.0, 125.0, 85.0, 145.0, 150.0, 80.0, 70.0),
}
#: The liver above its unenhanced value, as a fraction of its portal-venous enhancement.
LIVER_FRACTION = {Phase.NON_CONTRAST: 0.0, Phase.ARTERIAL: 25.0 / LIVER_PORTAL_ENHANCEMENT_HU,
                  Phase.PORTAL_VENOUS: 1.0, Phase.DELAYED: 40.0 / LIVER_PORTAL_ENHANCEMENT_HU}
#: The spleen relative to its portal-venous value (HU).
SPLEEN_OFFSET = {Phase.NON_CONTRAST: -70.0, Phase.ARTERIAL: 30.0, Phase.PORTAL_VENOUS: 0.0, Phase.DELAYED: -15.0}


@dataclass(frozen=True)
class Attenuation(Enhancing):
    """One patient's attenuation in one phase (HU)."""

    phase: Phase
    liver: float
    spleen: float


def attenuation(phase: Phase | str, liver_portal_hu: float, spleen_portal_hu: float,
                blood_scale: float = 1.0) -> Attenuation:
    """The values of `phase` for a patient whose portal-venous liver, spleen and blood-pool factor are
    given; the portal-venous phase returns exactly the phantom's original values."""
    phase = Phase(phase)
    values = {name: value * blood_scale if name in BLOOD else value
              for name, value in dataclasses.asdict(TABLES[phase]).items()}
    fraction = LIVER_FRACTION[phase]
    baseline = liver_portal_hu - LIVER_PORTAL_ENHANCEMENT_HU
    liver = liver_portal_hu if fraction == 1.0 else baseline + fraction * LIVER_PORTAL_ENHANCEMENT_HU
    return Attenuation(**values, phase=phase, liver=liver, spleen=spleen_portal_hu + SPLEEN_OFFSET[phase])


# --- lesions ---------------------------------------------------------------------------------------
#
# A lesion's recorded spec is its portal-venous appearance (`lesions.sample_varied_lesion_spec`). In
# another phase the same lesion (same shape, texture, seed) takes that phase's attenuation per class
# (docs/synth.md, "Phases", with the sources):
# - cyst: water in every phase, never enhancing [CY1, AC1];
# - hemangioma: nodules isodense to the blood pool in every phase (the aorta in the arterial phase),
#   the centre filling in from unenhanced blood to the blood pool by the delayed phase; flash-filling
#   ones enhance whole in the arterial phase and stay at the blood pool [HE1-HE3, C1];
# - HCC: slightly hypoattenuating unenhanced; arterial-phase hyperenhancement in 80-87 % (hypovascular
#   otherwise) [HC1, HC2, L2]; washout in the portal-venous phase (the recorded spec) that persists in
#   the delayed phase, where the capsule is at its most conspicuous [L2, HC4];
# - metastasis: hypoattenuating unenhanced; in the arterial phase a rim over a hypoattenuating centre
#   (84 % rims [M1]) or, in about 10 % (hypervascular primaries [N1, N2]), hyperenhancement; slow partial
#   central filling in the delayed phase.
# Hypervascular HCC and metastasis fractions are drawn per lesion from its seed; unenhanced
# attenuations refer to the liver's unenhanced value.

#: Unenhanced blood, for a hemangioma's centre and nodules before contrast [B1].
UNENHANCED_BLOOD_HU = 40.0
HYPOVASCULAR_HCC = 0.15
HYPERVASCULAR_METASTASIS = 0.10


def lesion_in_phase(spec: LesionSpec, phase: Phase | str, liver_portal_hu: float, blood_scale: float = 1.0) -> LesionSpec:
    """`spec` (a `lesions.LesionSpec` recorded in the portal-venous phase) as the same lesion looks in
    `phase`, for a patient with this portal-venous liver and blood-pool factor. The portal-venous
    phase returns `spec` itself."""
    phase = Phase(phase)
    if phase is Phase.PORTAL_VENOUS:
        return spec
    now = attenuation(phase, liver_portal_hu, 0.0, blood_scale)
    liver_nc = liver_portal_hu - LIVER_PORTAL_ENHANCEMENT_HU
    rng = np.random.default_rng([spec.seed, 11])
    hyper_draw, d1, d2, d3 = rng.random(4)
    replace = dataclasses.replace
    c = spec.lesion_class
    if c is LesionClass.BENIGN_CYST:
        return spec
    if c is LesionClass.HEMANGIOMA:
        blood_now = {Phase.NON_CONTRAST: UNENHANCED_BLOOD_HU, Phase.ARTERIAL: now.aorta,
                     Phase.DELAYED: now.portal_vein}[phase]
        if spec.enhancing_hu is None:  # flash-filling: the whole lesion follows the blood, a little below it
            below = {Phase.NON_CONTRAST: 0.0, Phase.ARTERIAL: 40.0 + 40.0 * d1, Phase.DELAYED: 5.0 + 20.0 * d1}[phase]
            return replace(spec, core_hu=float(blood_now - below))
        nodules = float(blood_now - 30.0 * d1)
        centre = {Phase.NON_CONTRAST: UNENHANCED_BLOOD_HU + 5.0 * d2,
                  Phase.ARTERIAL: UNENHANCED_BLOOD_HU + (0.1 + 0.2 * d2) * (spec.core_hu - UNENHANCED_BLOOD_HU),
                  Phase.DELAYED: blood_now - 15.0 * d2}[phase]
        width = spec.enhancing_mm * (0.6 if phase is Phase.ARTERIAL else 1.0)
        return replace(spec, core_hu=float(centre), enhancing_hu=nodules, enhancing_mm=float(width))
    if c is LesionClass.HCC:
        washout = liver_portal_hu - spec.core_hu
        if phase is Phase.NON_CONTRAST:
            core = liver_nc - (5.0 + 10.0 * d1)
            return replace(spec, core_hu=float(core), enhancing_hu=None if spec.enhancing_hu is None else float(core),
                           texture_hu=float(spec.texture_hu * 0.3))
        if phase is Phase.ARTERIAL:
            core = now.liver - (5.0 + 10.0 * d1) if hyper_draw < HYPOVASCULAR_HCC else now.liver + 20.0 + 40.0 * d1
            return replace(spec, core_hu=float(core), enhancing_hu=None if spec.enhancing_hu is None else float(core),
                           texture_hu=float(spec.texture_hu * 1.3))
        core = now.liver - washout * (1.0 + 0.3 * d1)
        capsule = None if spec.enhancing_hu is None else float(now.liver + 10.0 + 25.0 * d2)
        return replace(spec, core_hu=float(max(core, 30.0)), enhancing_hu=capsule)
    if c is LesionClass.METASTASIS:
        below = liver_portal_hu - spec.core_hu
        if phase is Phase.NON_CONTRAST:
            core = liver_nc - (10.0 + 15.0 * d1)
            return replace(spec, core_hu=float(core), enhancing_hu=None if spec.enhancing_hu is None else float(core))
        if phase is Phase.ARTERIAL:
            if hyper_draw < HYPERVASCULAR_METASTASIS:
                core = now.liver + 15.0 + 35.0 * d1
                return replace(spec, core_hu=float(core), enhancing_hu=None if spec.enhancing_hu is None else float(core))
            core = liver_nc + 5.0 + 10.0 * d1
            rim = None if spec.enhancing_hu is None else float(now.liver + 5.0 + 25.0 * d2)
            return replace(spec, core_hu=float(core), enhancing_hu=rim)
        core = now.liver - below * (0.6 + 0.3 * d1)
        rim = None if spec.enhancing_hu is None else float(now.liver - 10.0 * d2)
        return replace(spec, core_hu=float(core), enhancing_hu=rim)
    raise ValueError(f"unknown lesion class {c!r}")


__all__ = ["Attenuation", "BLOOD", "Enhancing", "LIVER_FRACTION", "Phase", "SPLEEN_OFFSET", "TABLES", "attenuation",
           "lesion_in_phase"]
