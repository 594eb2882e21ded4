"""How often the contrast-phase detector is right on simulated multiphase studies (run by hand).

Each simulated patient is one anatomy (`make_abdomen_phantom`, its own seed) painted in the four
phases of `liverview.synth.phases`, with the simulator's patient ranges (portal-venous liver 92-135 HU,
blood pool 150-205 HU) and, per phase, its own noise (7-20 HU) and slice thickness (non-contrast and
delayed 5 mm, arterial and portal-venous 3 mm). Every series is written as DICOM and read back through
`detect_series_phases`, the code path of `liverview-inspect` and the app, in three settings:

- ``images, each series alone``: empty descriptions, every series with the study's time as its
  acquisition time (nothing to order them by, as anonymisers often leave it); every series detected on
  its own, as if it were the only series of its study;
- ``images``: the same four series detected together, as the study they are;
- ``images+timing``: empty descriptions, the series' acquisition times of a 4-phase protocol
  (non-contrast, then arterial, portal-venous and delayed at 35, 70 and 180 s after injection);
- ``images+description``: the descriptions a scanner protocol writes;
- ``images+wrong description``: each series described as the next phase (non-contrast as arterial,
  arterial as portal-venous, portal-venous as delayed, delayed as non-contrast), no acquisition times.

``--fatty-liver`` draws every patient's unenhanced liver from -3 to 40 HU instead: moderate to severe
steatosis, 6 % of asymptomatic adults (<= 40 HU [F1]; -3 HU at about 40 % fat [F2]; references in
docs/contrast-phase-literature.md). Such a liver enhances by the same amount but stays far below the blood in
every phase.

Usage::

    .venv/bin/python benchmarks/bench_contrast_phase.py [--patients 20] [--seed 1] [--fatty-liver] [--out FILE]

(default FILE: benchmarks/results/contrast_phase.json, or contrast_phase_fatty_liver.json)

The phantom is simulated, the thresholds come from the literature (docs/contrast-phase.md), and
neither was tuned to these results.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import describe_machine  # noqa: E402 - benchmarks/ is not a package

from liverview.imaging.contrast_phase import ContrastPhase, detect_series_phases  # noqa: E402
from liverview.io import scan_paths  # noqa: E402
from liverview.synth.acquisition import simulate_acquisition, to_int16_hu  # noqa: E402
from liverview.synth.dicom_writer import PatientInfo, make_series_placement, write_ct_series  # noqa: E402
from liverview.synth.phantom import make_abdomen_phantom  # noqa: E402
from liverview.synth.phases import LIVER_PORTAL_ENHANCEMENT_HU, Phase  # noqa: E402
from liverview.synth.simulator import SimulatorConfig  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
#: Unenhanced liver of moderate to severe steatosis [F1, F2].
FATTY_UNENHANCED_LIVER_HU = (-3.0, 40.0)
PHASES = (Phase.NON_CONTRAST, Phase.ARTERIAL, Phase.PORTAL_VENOUS, Phase.DELAYED)
#: Seconds after injection; the non-contrast series is taken a minute before it.
PROTOCOL_S = {Phase.NON_CONTRAST: -60, Phase.ARTERIAL: 35, Phase.PORTAL_VENOUS: 70, Phase.DELAYED: 180}
THICKNESS_MM = {Phase.NON_CONTRAST: 5.0, Phase.ARTERIAL: 3.0, Phase.PORTAL_VENOUS: 3.0, Phase.DELAYED: 5.0}
DESCRIPTIONS = {Phase.NON_CONTRAST: "ABD NON CON 5mm", Phase.ARTERIAL: "LIVER ARTERIAL 3mm",
                Phase.PORTAL_VENOUS: "PORTAL VENOUS 3mm", Phase.DELAYED: "DELAYED 3 MIN 5mm"}
#: Descriptions that name the wrong phase: each series carries the next phase's.
WRONG_DESCRIPTIONS = {phase: DESCRIPTIONS[PHASES[(i + 1) % len(PHASES)]] for i, phase in enumerate(PHASES)}
SETTINGS = ("images, each series alone", "images", "images+timing", "images+description", "images+wrong description")
#: The files each setting writes (the first two differ only in how the series are detected).
WRITTEN_AS = {"images, each series alone": "images"}
#: 120 mm of the upper abdomen at 1.5625 mm pixels (a 40 cm field of view on 256 x 256).
EXTENT_Z_MM, MATRIX, PIXEL_MM = 120.0, 256, 400.0 / 256
INJECTION = _dt.datetime(2026, 12, 6, 10, 0, 0)


def write_patient(folder: Path, seed: int, setting: str, rng: np.random.Generator, fatty_liver: bool = False) -> None:
    config = SimulatorConfig()
    if fatty_liver:
        # The phantom's liver value is the portal-venous one; every other phase is derived from it.
        liver = float(rng.uniform(*FATTY_UNENHANCED_LIVER_HU)) + LIVER_PORTAL_ENHANCEMENT_HU
    else:
        liver = float(rng.uniform(*config.liver_hu))
    blood = float(rng.uniform(*config.blood_pool_hu))
    for number, phase in enumerate(PHASES, start=1):
        dz = THICKNESS_MM[phase]
        shape = (int(round(EXTENT_Z_MM / dz)), MATRIX, MATRIX)
        spacing = (dz, PIXEL_MM, PIXEL_MM)
        phantom = make_abdomen_phantom(shape, spacing, np.random.default_rng(seed), liver_hu=liver,
                                       blood_pool_hu=blood, phase=phase, top_s_mm=-20.0)
        simulate_acquisition(phantom.hu, spacing, rng, noise_sigma_hu=float(rng.uniform(*config.noise_sigma_hu)))
        identity = make_series_placement(["bench-contrast-phase", str(seed), setting], INJECTION, number)
        if setting == "images+timing":
            identity = dataclasses.replace(identity, acquired=INJECTION + _dt.timedelta(seconds=PROTOCOL_S[phase]))
        description = {"images+description": DESCRIPTIONS, "images+wrong description": WRONG_DESCRIPTIONS}.get(
            setting, {}).get(phase, "")
        write_ct_series(to_int16_hu(phantom.hu), spacing, folder / phase.value, PatientInfo(), description, identity,
                        contrast_agent="" if phase is Phase.NON_CONTRAST else "Iohexol 350 mgI/ml")


def describe_gaps(measured: list) -> dict:
    """Min, median and max of aorta - liver and aorta - veins (HU) over one phase's series."""
    def spread(values: list[float]) -> list[float] | None:
        return [round(float(f(values)), 1) for f in (np.min, np.median, np.max)] if values else None

    found = [e for e in measured if e is not None and e.aorta_hu is not None and e.liver_hu is not None]
    with_veins = [e for e in found if e.portal_vein_hu is not None]
    return {"series": len(measured), "veins_measured": len(with_veins),
            "aorta_minus_liver_hu": spread([e.aorta_hu - e.liver_hu for e in found]),
            "aorta_minus_veins_hu": spread([e.aorta_hu - e.portal_vein_hu for e in with_veins])}


def confusion(pairs: list[tuple[str, str]]) -> dict[str, dict[str, int]]:
    labels = [p.value for p in PHASES] + [ContrastPhase.UNKNOWN.value]
    return {truth: {said: sum(1 for t, s in pairs if t == truth and s == said) for said in labels}
            for truth in labels[:-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fatty-liver", action="store_true",
                        help="unenhanced liver -3 to 40 HU (moderate to severe steatosis)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.out = args.out or RESULTS / ("contrast_phase_fatty_liver.json" if args.fatty_liver else "contrast_phase.json")
    results: dict = {"settings": {}}
    timings: list[float] = []
    gaps: dict[str, list] = {}
    for setting in SETTINGS:
        pairs: list[tuple[str, str]] = []
        rng = np.random.default_rng(args.seed)
        for patient in range(args.patients):
            with tempfile.TemporaryDirectory(prefix="lv-phase-") as tmp:
                write_patient(Path(tmp), args.seed * 1000 + patient, WRITTEN_AS.get(setting, setting), rng,
                              args.fatty_liver)
                infos = scan_paths(tmp).series
                start = time.perf_counter()
                if setting in WRITTEN_AS:
                    phases = {info.key: detect_series_phases([info])[info.key] for info in infos}
                else:
                    phases = detect_series_phases(infos)
                timings.append((time.perf_counter() - start) / len(infos))
                for info in infos:
                    truth = Path(info.frames[0].path).parent.name
                    pairs.append((truth, phases[info.key].phase.value))
                    if setting == "images":
                        gaps.setdefault(truth, []).append(phases[info.key].enhancement)
        right = sum(t == s for t, s in pairs)
        results["settings"][setting] = {"series": len(pairs), "right": right, "accuracy": round(right / len(pairs), 4),
                                        "confusion_truth_by_decision": confusion(pairs)}
        print(f"{setting:<26} {right}/{len(pairs)} right ({right / len(pairs):.1%})")
        for truth, row in results["settings"][setting]["confusion_truth_by_decision"].items():
            print(f"    {truth:<14}", "  ".join(f"{k}={v}" for k, v in row.items() if v))
    results["measured_by_phase"] = {truth: describe_gaps(measured) for truth, measured in gaps.items()}
    for truth, row in results["measured_by_phase"].items():
        print(f"    {truth:<14} aorta - liver {row['aorta_minus_liver_hu']}, aorta - veins {row['aorta_minus_veins_hu']} "
              f"(veins measured in {row['veins_measured']} of {row['series']})")
    results["median_detection_s_per_series"] = round(float(np.median(timings)), 4)
    results["patients"], results["seed"] = args.patients, args.seed
    results["unenhanced_liver_hu"] = list(FATTY_UNENHANCED_LIVER_HU) if args.fatty_liver else "simulator's range"
    results["simulated"] = True
    results["machine"] = describe_machine()
    results["date"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"median detection {results['median_detection_s_per_series'] * 1000:.0f} ms per series; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
