"""What a model was trained on, and whether an input lies outside it.

A network answers every input, also one unlike anything it saw, and its softmax can then be confidently
wrong (a non-contrast series read by a portal-venous model came back at 99.8 %, "low" uncertainty).
The bundle's model.json says what the training data covered (`training_domain`); the app and
`liverview-predict` compare each input with it and, outside it, show "outside the model's training
data" with the reasons instead of a low or moderate uncertainty.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from liverview.imaging.contrast_phase import ContrastPhase, PhaseDecision
from liverview.io.volume import Volume

#: The uncertainty shown for an answer outside the training data.
OUTSIDE = "outside training data"

#: Inputs this far beyond a trained range still count as inside (a 5 mm range is not broken by 5.2 mm).
RANGE_MARGIN = 0.1
LIVER_MARGIN_HU = 10.0
#: The largest lesion `liverview-synth` draws (`SimulatorConfig.diameter_mm`; a test checks they agree):
#: the bound of a model trained on simulated lesions whose bundle does not record its own.
SIMULATED_MAX_DIAMETER_MM = 80.0
#: Training lesions lie in the liver: an outline less than this share of which lies on the liver liverview
#: finds on its slice is something else (the spleen, a kidney, muscle, air); exophytic lesions keep more.
MIN_SHARE_ON_LIVER = 0.25


@dataclass(frozen=True)
class TrainingDomain:
    phases: tuple[ContrastPhase, ...]
    liver_hu: tuple[float, float] | None
    pixel_mm: tuple[float, float] | None
    slice_thickness_mm: tuple[float, float] | None
    min_lesion_diameter_mm: float | None
    #: Image noise: SD of the liver parenchyma's pixels (HU).
    noise_hu: tuple[float, float] | None
    #: Where the description comes from: the bundle, or the assumption for older bundles.
    source: str
    #: The liver's HU per phase, where the training data give it (the liver enhances with the phase);
    #: `liver_hu` for a phase not listed.
    liver_hu_by_phase: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    max_lesion_diameter_mm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"phases": [p.value for p in self.phases], "liver_hu": self.liver_hu, "pixel_mm": self.pixel_mm,
                "slice_thickness_mm": self.slice_thickness_mm, "min_lesion_diameter_mm": self.min_lesion_diameter_mm,
                "noise_hu": self.noise_hu,
                **({"liver_hu_by_phase": {k: list(v) for k, v in self.liver_hu_by_phase.items()}}
                   if self.liver_hu_by_phase else {}),
                **({"max_lesion_diameter_mm": self.max_lesion_diameter_mm}
                   if self.max_lesion_diameter_mm is not None else {})}

    @classmethod
    def from_model_info(cls, info: Mapping[str, Any]) -> TrainingDomain:
        """model.json's `training_domain`; a bundle without one (every bundle up to 1.3.0) was trained on
        `liverview-synth` lesions in the portal-venous phase at the simulator's ranges of that time."""
        raw = info.get("training_domain")
        if not isinstance(raw, Mapping):
            return SIMULATED_PORTAL_VENOUS

        def pair(key: str) -> tuple[float, float] | None:
            value = raw.get(key)
            return (float(value[0]), float(value[1])) if value else None

        diameter = raw.get("min_lesion_diameter_mm")
        largest = raw.get("max_lesion_diameter_mm")
        # Bundles written before the largest lesion was recorded: a simulated one's is the simulator's.
        simulated = bool(info.get("simulated") or (info.get("training_data") or {}).get("simulated"))
        if largest is None and simulated:
            largest = SIMULATED_MAX_DIAMETER_MM
        return cls(phases=tuple(ContrastPhase(p) for p in raw.get("phases", [])), liver_hu=pair("liver_hu"),
                   pixel_mm=pair("pixel_mm"), slice_thickness_mm=pair("slice_thickness_mm"),
                   min_lesion_diameter_mm=None if diameter is None else float(diameter), noise_hu=pair("noise_hu"),
                   source="model.json",
                   liver_hu_by_phase={str(k): (float(v[0]), float(v[1]))
                                      for k, v in (raw.get("liver_hu_by_phase") or {}).items()},
                   max_lesion_diameter_mm=None if largest is None else float(largest))

    def check(self, volume: Volume, phase: PhaseDecision | None, long_axis_mm: float | None,
              share_on_liver: float | None = None) -> list[str]:
        """The reasons `volume` (with its phase) and a lesion of `long_axis_mm`, `share_on_liver` of whose
        outline lies on the liver (None: not known), lie outside; [] inside."""
        reasons: list[str] = []
        if share_on_liver is not None and share_on_liver < MIN_SHARE_ON_LIVER:
            reasons.append(f"{share_on_liver:.0%} of the outline lies on the liver liverview finds on its slice; the "
                           "model was trained on lesions in the liver")
        # Training data that did not record its phases leaves nothing to compare the phase with.
        if self.phases:
            trained = ", ".join(p.words for p in self.phases)
            if phase is None or phase.phase is ContrastPhase.UNKNOWN:
                reasons.append(f"the series' contrast phase is not known; the model was trained on {trained} series only")
            elif phase.phase not in self.phases:
                reasons.append(f"this series is {phase.phase.words}; the model was trained on {trained} series only")
        measured = phase.enhancement if phase is not None else None
        liver = measured.liver_hu if measured is not None else None
        noise = measured.noise_hu if measured is not None else None
        livers = self.liver_hu_by_phase.get(phase.phase.value, self.liver_hu) if phase is not None else self.liver_hu
        if self.noise_hu is not None and noise is not None and not _within(noise, self.noise_hu):
            reasons.append(f"the image noise is {noise:.0f} HU; the training images had {self.noise_hu[0]:.0f}-"
                           f"{self.noise_hu[1]:.0f} HU")
        if livers is not None and liver is not None and not (
                livers[0] - LIVER_MARGIN_HU <= liver <= livers[1] + LIVER_MARGIN_HU):
            reasons.append(f"the liver measures {liver:.0f} HU; the training livers were {livers[0]:.0f}-"
                           f"{livers[1]:.0f} HU" + (" in this phase" if phase is not None
                                                      and phase.phase.value in self.liver_hu_by_phase else ""))
        pixel = (volume.spacing_mm[1] * volume.spacing_mm[2]) ** 0.5
        if self.pixel_mm is not None and not _within(pixel, self.pixel_mm):
            reasons.append(f"pixels are {pixel:.2f} mm; the training images had {self.pixel_mm[0]:.2f}-"
                           f"{self.pixel_mm[1]:.2f} mm")
        thickness = volume.info.slice_thickness_mm or volume.spacing_mm[0]
        gap = volume.spacing_mm[0]
        if self.slice_thickness_mm is not None:
            lo, hi = self.slice_thickness_mm
            if not _within(thickness, self.slice_thickness_mm):
                reasons.append(f"slices are {thickness:g} mm thick; the training images had {lo:g}-{hi:g} mm")
            # The training slices lay one thickness apart; a series with every other slice left out, whose
            # tag still says 5 mm, puts its neighbours 10 mm from the key slice.
            if abs(gap - thickness) > 0.01 and not _within(gap, self.slice_thickness_mm):
                reasons.append(f"slices are {gap:g} mm apart; the training images had theirs {lo:g}-{hi:g} mm apart")
        if self.min_lesion_diameter_mm is not None and long_axis_mm is not None \
                and long_axis_mm < self.min_lesion_diameter_mm * (1 - RANGE_MARGIN):
            reasons.append(f"the lesion measures {long_axis_mm:.0f} mm; the smallest training lesions were "
                           f"{self.min_lesion_diameter_mm:.0f} mm")
        if self.max_lesion_diameter_mm is not None and long_axis_mm is not None \
                and long_axis_mm > self.max_lesion_diameter_mm * (1 + RANGE_MARGIN):
            reasons.append(f"the lesion measures {long_axis_mm:.0f} mm; the largest training lesions were "
                           f"{self.max_lesion_diameter_mm:.0f} mm")
        return reasons


def domain_from_records(records: Sequence[Any], read_phases: Sequence[str] = ()) -> TrainingDomain:
    """What a set of dataset records (`data.LesionRecord`, their lesions.jsonl fields in `extra`)
    covers: phases (a record's `contrast_phase`, and for a multiphase model reading `read_phases` the
    other phases its patch holds; simulated records before phases were recorded are portal-venous),
    pixel size and slice thickness (`spacing_mm`), the smallest lesion (its simulated diameter, else
    the largest in-plane extent of `lesion_bbox_zyx`), and the simulated livers' HU and noise."""
    phases: set[ContrastPhase] = set()
    pixels, slices, sizes, livers, noises = [], [], [], [], []
    for record in records:
        extra = record.extra
        synth = extra.get("synth") or {}
        phase = extra.get("contrast_phase") or (ContrastPhase.PORTAL_VENOUS.value if synth else None)
        held = [phase] if phase and phase != ContrastPhase.UNKNOWN.value else []
        held += [p for p in (extra.get("phases") or {}) if p in read_phases]
        phases.update(ContrastPhase(p) for p in held if not read_phases or p in read_phases)
        spacing = extra.get("spacing_mm")
        if spacing:
            pixels.append(float(spacing[1] * spacing[2]) ** 0.5)
            slices.append(float(spacing[0]))
            box = extra.get("lesion_bbox_zyx")
            if synth.get("radii_mm_zyx"):
                sizes.append(2.0 * max(float(r) for r in synth["radii_mm_zyx"]))
            elif box:
                (_, _), (y0, y1), (x0, x1) = box
                sizes.append(max((y1 - y0) * spacing[1], (x1 - x0) * spacing[2]))
        patient = synth.get("patient") or {}
        if patient.get("liver_hu") is not None:
            livers.append(float(patient["liver_hu"]))
        if patient.get("noise_sigma_hu") is not None:
            noises.append(float(patient["noise_sigma_hu"]))
    ordered = tuple(p for p in ContrastPhase if p in phases)
    return TrainingDomain(
        phases=ordered, liver_hu=(min(livers), max(livers)) if livers and len(livers) == len(records) else None,
        pixel_mm=(min(pixels), max(pixels)) if pixels else None,
        slice_thickness_mm=(min(slices), max(slices)) if slices else None,
        min_lesion_diameter_mm=min(sizes) if sizes else None,
        noise_hu=(min(noises), max(noises)) if noises and len(noises) == len(records) else None,
        source="training records", max_lesion_diameter_mm=max(sizes) if sizes else None)


def _within(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] * (1 - RANGE_MARGIN) <= value <= bounds[1] * (1 + RANGE_MARGIN)


#: The data of every bundled model up to 1.3.0: `make model` ran liverview-synth (portal-venous
#: phantoms; SimulatorConfig's liver 92-135 HU, pixels 0.66-0.9 mm, slices 2.5-5 mm, noise 7-20 HU)
#: with --min-diameter 8.
SIMULATED_PORTAL_VENOUS = TrainingDomain(
    phases=(ContrastPhase.PORTAL_VENOUS,), liver_hu=(92.0, 135.0), pixel_mm=(0.66, 0.9),
    slice_thickness_mm=(2.5, 5.0), min_lesion_diameter_mm=8.0, noise_hu=(7.0, 20.0),
    source="assumed: bundles without training_domain were trained on liverview-synth's portal-venous lesions",
    max_lesion_diameter_mm=SIMULATED_MAX_DIAMETER_MM)

__all__ = ["OUTSIDE", "SIMULATED_PORTAL_VENOUS", "TrainingDomain", "domain_from_records"]
