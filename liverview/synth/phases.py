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

from dataclasses import dataclass
from enum import Enum

#: Liver enhancement in the portal-venous phase above its unenhanced value [G1: 59-63 HU].
LIVER_PORTAL_ENHANCEMENT_HU = 58.0


class Phase(str, Enum):
    NON_CONTRAST = "non_contrast"
    ARTERIAL = "arterial"
    PORTAL_VENOUS = "portal_venous"
    DELAYED = "delayed"


@dataclass(frozen=True)
class PhaseTable:
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
    #: Liver above its unenhanced value, as a fraction of the portal-venous enhancement.
    liver_fraction: float
    #: Spleen relative to its portal-venous value.
    spleen_offset: float


TABLES: dict[Phase, PhaseTable] = {
    Phase.NON_CONTRAST: PhaseTable(40.0, 40.0, 38.0, 40.0, 40.0, 45.0, 32.0, 30.0, 45.0, 40.0, 0.0, -70.0),
    Phase.ARTERIAL: PhaseTable(320.0, 145.0, 80.0, 45.0, 300.0, 120.0, 200.0, 80.0, 130.0, 100.0,
                               25.0 / LIVER_PORTAL_ENHANCEMENT_HU, 30.0),
    Phase.PORTAL_VENOUS: PhaseTable(170.0, 175.0, 150.0, 162.0, 165.0, 100.0, 165.0, 105.0, 100.0, 70.0, 1.0, 0.0),
    Phase.DELAYED: PhaseTable(125.0, 125.0, 120.0, 122.0, 125.0, 85.0, 145.0, 150.0, 80.0, 70.0,
                              40.0 / LIVER_PORTAL_ENHANCEMENT_HU, -15.0),
}


@dataclass(frozen=True)
class Attenuation:
    """One patient's attenuation in one phase (HU)."""

    phase: Phase
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
    liver: float
    spleen: float


def attenuation(phase: Phase | str, liver_portal_hu: float, spleen_portal_hu: float,
                blood_scale: float = 1.0) -> Attenuation:
    """The values of `phase` for a patient whose portal-venous liver, spleen and blood-pool factor are
    given; the portal-venous phase returns exactly the phantom's original values."""
    phase = Phase(phase)
    t = TABLES[phase]

    def blood(value: float) -> float:
        return value * blood_scale

    baseline = liver_portal_hu - LIVER_PORTAL_ENHANCEMENT_HU
    liver = liver_portal_hu if t.liver_fraction == 1.0 else baseline + t.liver_fraction * LIVER_PORTAL_ENHANCEMENT_HU
    return Attenuation(
        phase=phase, aorta=blood(t.aorta), portal_vein=blood(t.portal_vein), ivc=blood(t.ivc),
        hepatic_vein=blood(t.hepatic_vein), cardiac_blood=blood(t.cardiac_blood), myocardium=t.myocardium,
        kidney_cortex=t.kidney_cortex, kidney_medulla=t.kidney_medulla, pancreas=t.pancreas, bowel_wall=t.bowel_wall,
        liver=liver, spleen=spleen_portal_hu + t.spleen_offset,
    )


__all__ = ["Attenuation", "Phase", "PhaseTable", "TABLES", "attenuation"]
